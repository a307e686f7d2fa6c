"""NVFP4 W4A4 checkpoints (llmcompressor's NVFP4 preset: NVFP4 weights, NVFP4 activations
with a calibrated per-layer input_global_scale) without llmcompressor: a qrt NVFP4A16 file
given the W4A4 config group and input_global_scale tensors the way llmcompressor calibrates
them (448 * 6 / max|x| over calibration inputs). Load, forward, save round trip, and the
errors for a missing or mis-shaped input_global_scale. The llmcompressor-written file is
tests/interop/test_llmcompressor_float.py's."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import qrt
from qrt.numerics.fp import fake_quant_nvfp4_act
from qrt.runtime.linear import QuantLinear, use_backend
from qrt_kernels.dispatch import triton_runs_on
from tiny_models import make

NVFP4_ACT = {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16, "strategy": "tensor_group",
             "dynamic": "local", "scale_dtype": "torch.float8_e4m3fn"}


def _tensors(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _calibrated_scales(model, ids) -> dict[str, torch.Tensor]:
    """llmcompressor's static_minmax + generate_gparam: 448 * 6 / max|x| of each layer's input."""
    amax, hooks = {}, []
    for n, m in model.named_modules():
        if isinstance(m, QuantLinear):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, n=n: amax.__setitem__(n, max(amax.get(n, 0.0), float(args[0].abs().max())))))
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    return {f"{n}.input_global_scale": torch.tensor([448.0 * 6.0 / a], dtype=torch.float32) for n, a in amax.items()}


@pytest.fixture
def w4a4(tmp_path, rng_seed):
    """(directory, the NVFP4A16 model it came from, input ids) of a W4A4 checkpoint."""
    model = make("llama", tmp_path / "fp")
    qrt.quantize_model(model, "nvfp4a16", progress=False)
    path = tmp_path / "w4a4"
    qrt.save_quantized(model, path, dtype=torch.float32)
    gen = torch.Generator().manual_seed(rng_seed)
    t = _tensors(path) | _calibrated_scales(model, torch.randint(0, 320, (4, 16), generator=gen))
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((path / "config.json").read_text())
    for g in cfg["quantization_config"]["config_groups"].values():
        g["input_activations"] = dict(NVFP4_ACT)
    (path / "config.json").write_text(json.dumps(cfg))
    return path, model, torch.randint(0, 320, (2, 12), generator=gen)


def _reference_w4a4(a16_model, scales):
    """The NVFP4A16 model with each quantized Linear computing F.linear(fake_quant(x), W)."""
    for n, m in list(a16_model.named_modules()):
        if isinstance(m, QuantLinear):
            w, gs = m.dequantize_weight(torch.float32), scales[f"{n}.input_global_scale"]
            m.forward = lambda x, w=w, gs=gs: F.linear(fake_quant_nvfp4_act(x, gs), w)
    return a16_model


def test_w4a4_loads_and_quantizes_activations(w4a4):
    path, a16_model, ids = w4a4
    loaded = qrt.load_quantized(path, device="cpu", dtype=torch.float32, progress=False)
    scales = {k: v for k, v in _tensors(path).items() if k.endswith("input_global_scale")}
    layers = {n: m for n, m in loaded.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == 14 == len(scales)
    for n, m in layers.items():
        assert m.scheme.activations.is_nvfp4 and "a4-nvfp4" in repr(m), n
        assert torch.equal(m.input_global_scale, scales[f"{n}.input_global_scale"]), n
    with torch.no_grad():
        got = loaded(ids).logits
        a16 = a16_model(ids).logits
        want = _reference_w4a4(a16_model, scales)(ids).logits
    assert torch.equal(got, want)
    assert (got - a16).abs().max() > 1e-3 * a16.abs().max()  # activations really are quantized


def test_w4a4_save_round_trip_keeps_config_and_tensors(w4a4, tmp_path):
    path, _, ids = w4a4
    loaded = qrt.load_quantized(path, device="cpu", dtype=torch.float32, progress=False)
    qrt.save_quantized(loaded, tmp_path / "again", dtype=torch.float32)
    before, after = _tensors(path), _tensors(tmp_path / "again")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    cfg = lambda p: json.loads((p / "config.json").read_text())["quantization_config"]  # noqa: E731
    groups = cfg(tmp_path / "again")["config_groups"]
    assert [g["input_activations"] for g in groups.values()] == [NVFP4_ACT]
    assert groups == cfg(path)["config_groups"]
    again = qrt.load_quantized(tmp_path / "again", device="cpu", dtype=torch.float32, progress=False)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, loaded(ids).logits)


@pytest.mark.skipif(not triton_runs_on(torch.device("cpu")), reason="needs TRITON_INTERPRET=1")
def test_w4a4_triton_path_matches_dense(w4a4):
    path, a16_model, ids = w4a4
    loaded = qrt.load_quantized(path, device="cpu", dtype=torch.float32, progress=False)
    with torch.no_grad():
        dense = loaded(ids).logits
        tri = use_backend(loaded, "triton")(ids).logits
        a16 = a16_model(ids).logits
    # the same fake-quantized inputs into fp32 sums in another order; an input within float
    # noise of an e2m1 rounding tie may round the other way downstream, so compare on average
    # against the activation quantization's own effect (measured over 6 seeds: max 6e-7, mean
    # 8e-8, against a mean effect of 0.033: no flip seen)
    err, a4_effect = (tri - dense).abs().mean(), (dense - a16).abs().mean()
    assert err < 0.05 * a4_effect, (float(err), float(a4_effect))


@pytest.mark.parametrize("change, says", [
    (lambda t, k: t.pop(k), "tensor '{k}' (NVFP4 activation global scale) is missing from the checkpoint"),
    (lambda t, k: t.__setitem__(k, torch.ones(2)),
     "tensor '{k}' (NVFP4 activation global scale): expected float32 [1], found float32 [2]"),
    (lambda t, k: t.__setitem__(k, torch.ones(1, dtype=torch.float16)),
     "tensor '{k}' (NVFP4 activation global scale): expected float32 [1], found float16 [1]"),
])
def test_bad_input_global_scale_is_named(w4a4, change, says):
    path = w4a4[0]
    t, key = _tensors(path), "model.layers.1.mlp.down_proj.input_global_scale"
    change(t, key)
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError) as e:
        qrt.load_quantized(path, device="cpu", progress=False)
    assert says.format(k=key) in str(e.value) and str(path / "model.safetensors") in str(e.value), str(e.value)


def test_uncalibrated_w4a4_layer_refuses_to_run():
    """qrt cannot calibrate NVFP4 activations: a layer made without a checkpoint says so."""
    s = qrt.QuantScheme(type="float", bits=4, strategy="tensor_group", group_size=16,
                        activations=qrt.ActivationScheme(bits=4, type="float", strategy="tensor_group",
                                                         group_size=16, dynamic="local"))
    layer = QuantLinear.from_linear(torch.nn.Linear(32, 8), s)
    with pytest.raises(ValueError, match="qrt cannot calibrate W4A4 activations"):
        layer(torch.randn(2, 32))
