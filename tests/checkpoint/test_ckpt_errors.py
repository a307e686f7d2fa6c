"""Bad input: every failure names the file, the tensor, what was expected and what was
found; a failed save never leaves a half-written directory."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import qrt.checkpoint.save
from qrt import load_quantized, quantize_model, save_quantized


@pytest.fixture
def ckpt(make_model, tmp_path):
    """A 3-shard W4A16 checkpoint of a tiny Llama (max_shard_size forces sharding)."""
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False)
    info = save_quantized(model, tmp_path / "q", max_shard_size="200KB")
    assert len(info.files) >= 3 and (tmp_path / "q" / "model.safetensors.index.json").is_file()
    return tmp_path / "q"


def shard_of(ckpt, tensor):
    return ckpt / json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][tensor]


def edit_config(ckpt, fn):
    cfg = json.loads((ckpt / "config.json").read_text())
    fn(cfg["quantization_config"])
    (ckpt / "config.json").write_text(json.dumps(cfg))


def replace_tensor(ckpt, name, value):
    f = shard_of(ckpt, name)
    tensors = load_file(f)
    tensors[name] = value
    save_file(tensors, f, metadata={"format": "pt"})


def test_sharded_checkpoint_loads(ckpt):
    assert load_quantized(ckpt, device="cpu", progress=False) is not None


def test_missing_shard(ckpt):
    f = shard_of(ckpt, "model.layers.1.mlp.down_proj.weight_packed")
    f.unlink()
    with pytest.raises(FileNotFoundError, match=f"shard {f.name} listed in model.safetensors.index.json is missing"):
        load_quantized(ckpt, device="cpu", progress=False)


@pytest.mark.parametrize("keep", [100, -1000])
def test_truncated_or_corrupt_shard(ckpt, keep):
    f = shard_of(ckpt, "model.layers.0.self_attn.q_proj.weight_packed")
    data = f.read_bytes()
    f.write_bytes(data[:keep])  # 100: header cut; -1000: data cut
    with pytest.raises(ValueError, match=f"{f}: corrupt or truncated safetensors"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_wrong_shape(ckpt):
    name = "model.layers.0.mlp.down_proj.weight_packed"
    replace_tensor(ckpt, name, torch.zeros(192, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match=rf"{shard_of(ckpt, name)}.*tensor '{name}': expected int32 \[192, 32\].*"
                                         r"found int32 \[192, 16\]"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_wrong_dtype(ckpt):
    name = "model.layers.0.self_attn.q_proj.weight_scale"
    replace_tensor(ckpt, name, torch.ones(192, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=rf"tensor '{name}': expected float16/bfloat16/float32 \[192, 3\].*"
                                         r"found int32 \[192, 3\]"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_wrong_shape_plain_tensor(ckpt):
    name = "model.norm.weight"
    replace_tensor(ckpt, name, torch.ones(100, dtype=torch.float16))
    with pytest.raises(ValueError, match=rf"tensor '{name}': expected shape \[192\].*found \[100\]"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_missing_tensor(ckpt):
    name = "model.layers.1.input_layernorm.weight"
    f = shard_of(ckpt, name)
    tensors = load_file(f)
    del tensors[name]
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"tensor '{name}' listed in model.safetensors.index.json is not in the file"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_unknown_quant_method(ckpt):
    edit_config(ckpt, lambda q: q.update(quant_method="bitsandbytes"))
    with pytest.raises(ValueError, match=r"quant_method: expected one of .*found 'bitsandbytes'"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_unknown_format(ckpt):
    def fn(q):
        for g in q["config_groups"].values():
            g["format"] = "mxfp6-pack-quantized"
    edit_config(ckpt, fn)
    # caught by the config validation before any layer is built: the error names the file, the
    # group's field path, the format and what qrt reads
    with pytest.raises(ValueError, match=r"config\.json: quantization_config\.config_groups\.group_\d: .*config group "
                                         r"'group_\d'\W+checkpoint format 'mxfp6-pack-quantized' is not implemented "
                                         r"by qrt; qrt reads pack-quantized"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_float_format_on_int_weights(ckpt):
    """nvfp4-pack-quantized is a format qrt reads, but not for a group of int weights."""
    def fn(q):
        for g in q["config_groups"].values():
            g["format"] = "nvfp4-pack-quantized"
    edit_config(ckpt, fn)
    with pytest.raises(ValueError, match=r"format 'nvfp4-pack-quantized' does not hold int weights"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_group_size_mismatch(ckpt):
    """The config says g32 for the adjusted layers, the tensors hold g64 scales."""
    def fn(q):
        q["config_groups"]["group_0"]["weights"]["group_size"] = 32
    edit_config(ckpt, fn)
    with pytest.raises(ValueError, match=r"weight_scale': expected .*\[192, 6\] for group_size 32, in_features 192, "
                                         r"found float16 \[192, 3\]"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_not_quantized_and_pickle_refused(make_model, tmp_path):
    model = make_model("llama", tmp_path / "fp")
    with pytest.raises(ValueError, match="no quantization_config"):
        load_quantized(tmp_path / "fp", device="cpu", progress=False)
    quantize_model(model, "w4a16", progress=False)
    save_quantized(model, tmp_path / "q")
    (tmp_path / "q" / "model.safetensors").unlink()
    (tmp_path / "q" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ValueError, match="only pickle weights found"):
        load_quantized(tmp_path / "q", device="cpu", progress=False)


@pytest.mark.parametrize("where", [float("nan"), float("inf")])
def test_nan_inf_weights_named(make_model, where):
    model = make_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[7, 3] = where
    with pytest.raises(ValueError, match=r"layer 'model.layers.1.mlp.up_proj': weight \[256, 192\] holds 1 "
                                         r"NaN/Inf value\(s\), first at \[7, 3\]"):
        quantize_model(model, "w4a16", progress=False)


def test_ragged_save_refused_unless_asked(make_model, tmp_path):
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False, ragged_groups=True)
    with pytest.raises(ValueError, match=r"group size 128 does not divide in_features 192"):
        save_quantized(model, tmp_path / "q")
    assert not (tmp_path / "q").exists()
    info = save_quantized(model, tmp_path / "q", ragged_groups=True)
    assert info.ragged and "only qrt reads" in info.summary()
    loaded = load_quantized(tmp_path / "q", device="cpu", progress=False)
    assert loaded.model.layers[0].self_attn.q_proj.weight_scale.shape == (192, 2)


def _no_temp_left(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


def test_failed_save_leaves_nothing(make_model, tmp_path, monkeypatch):
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False)
    calls = []

    def failing_save_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # the first shard is already on disk
            raise OSError("disk full (injected)")
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(qrt.checkpoint.save, "save_file", failing_save_file)
    with pytest.raises(OSError, match="injected"):
        save_quantized(model, tmp_path / "q", max_shard_size="200KB")
    assert not (tmp_path / "q").exists() and _no_temp_left(tmp_path)


def test_failed_overwrite_keeps_old_checkpoint(ckpt, make_model, monkeypatch):
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    model = make_model("llama")
    quantize_model(model, "w8a16", progress=False)
    monkeypatch.setattr(qrt.checkpoint.save, "_write_config", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_quantized(model, ckpt)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before and _no_temp_left(ckpt.parent)
    monkeypatch.undo()
    save_quantized(model, ckpt)  # a successful overwrite replaces it whole
    assert not (ckpt / "model.safetensors.index.json").exists() and _no_temp_left(ckpt.parent)


def test_refuses_to_replace_unrelated_dir(make_model, tmp_path):
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty or model directory"):
        save_quantized(model, tmp_path / "notes")
    assert os.listdir(tmp_path / "notes") == ["todo.txt"]
