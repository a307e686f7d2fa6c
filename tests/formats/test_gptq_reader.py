"""GPTQ reader vs tensors packed the AutoGPTQ way (tests/formats/peer_formats.py) and a
float64 dequantization of them.

Exactness: (q_u - z_u) is an integer below 2^8 in magnitude and the scale an fp16 value
(11-bit significand), so their product needs at most 19 significant bits: QuantLinear's
float32 dequantization is exact and must equal the float64 oracle bit for bit.
"""
import numpy as np
import pytest
import torch
from peer_formats import make_gptq_layer, quant_linear_from_buffers
from safetensors import safe_open
from safetensors.torch import save_file

from qrt.formats import gptq


def _read(tensors, prefix, cfg, k, n, **kw):
    named = {f"{prefix}.{key}": t for key, t in tensors.items()}
    return gptq.read_layer(named.__getitem__, prefix, cfg, k, n, **kw)


def _check_layer(k, n, bits, group_size, sym, desc_act, fmt, declared, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors, w64 = make_gptq_layer(k, n, bits, group_size, sym, desc_act, fmt, gen)
    cfg = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act,
           "sym": sym, "checkpoint_format": declared}
    scheme, buffers = _read(tensors, "model.layers.0.mlp.up_proj", cfg, k, n)
    assert scheme.bits == bits and scheme.symmetric == sym
    assert scheme.actorder == ("group" if desc_act else None)
    assert ("weight_g_idx" in buffers) == desc_act  # trivial j // G g_idx dropped
    assert scheme.strategy == ("channel" if group_size == -1 else "group")
    layer = quant_linear_from_buffers(scheme, buffers, k, n)
    assert np.array_equal(layer.dequantize_weight(torch.float64).numpy(), w64)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_layer_dequantizes_like_float64(bits, fmt, sym, desc_act, rng_seed):
    _check_layer(96, 64, bits, 32, sym, desc_act, fmt, fmt, rng_seed)


@pytest.mark.parametrize("group_size", [-1, 64])  # per-channel; ragged last group (96 = 64 + 32)
def test_gptq_channel_and_ragged_groups(group_size, rng_seed):
    _check_layer(96, 64, 4, group_size, False, False, "gptq", "gptq", rng_seed)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("fmt,declared", [("gptq_v2", "gptq"), ("gptq", "gptq_v2")])
def test_symmetric_zeros_decide_the_convention_over_the_label(bits, fmt, declared, rng_seed):
    """Mislabelled files: v2 data under a v1 label and the reverse still read right."""
    _check_layer(64, 64, bits, 32, True, False, fmt, declared, rng_seed)


def test_detection_rule_values():
    stored7, stored8 = torch.full((2, 8), 7), torch.full((2, 8), 8)
    assert gptq.detect_zero_convention(stored7, 4, "gptq_v2") == "gptq"
    assert gptq.detect_zero_convention(stored8, 4, "gptq") == "gptq_v2"
    mixed = torch.tensor([[7, 8, 3, 12]])
    assert gptq.detect_zero_convention(mixed, 4, "gptq") == "gptq"
    assert gptq.detect_zero_convention(mixed, 4, "gptq_v2") == "gptq_v2"
    assert gptq.detect_zero_convention(torch.full((1, 4), 127), 8, "gptq_v2") == "gptq"


def test_v1_zero_underflow_is_refused(rng_seed):
    """v1 writes zero 0 as -1, which saturates its word: no b-bit reading exists."""
    gen = torch.Generator().manual_seed(rng_seed)
    tensors, _ = make_gptq_layer(64, 64, 4, 32, False, False, "gptq", gen)
    words = tensors["qzeros"].clone()
    words[1, 2] = -1 << 12  # what packing zero - 1 = -1 at field 3 of a word ORs in
    tensors["qzeros"] = words
    with pytest.raises(ValueError, match=r"qzeros.*true zero point of 16"):
        _read(tensors, "l", {"bits": 4, "group_size": 32, "checkpoint_format": "gptq"}, 64, 64)


def test_reads_from_safetensors_without_g_idx(tmp_path, rng_seed):
    """g_idx absent (older AutoGPTQ): safe_open raises its own error for it, read as absent."""
    gen = torch.Generator().manual_seed(rng_seed)
    tensors, w64 = make_gptq_layer(64, 32, 4, 32, False, False, "gptq_v2", gen)
    del tensors["g_idx"]
    save_file({f"p.{k}": v for k, v in tensors.items()}, tmp_path / "m.safetensors")
    cfg = {"bits": 4, "group_size": 32, "checkpoint_format": "gptq_v2"}
    with safe_open(tmp_path / "m.safetensors", "pt") as f:
        scheme, buffers = gptq.read_layer(f.get_tensor, "p", cfg, 64, 32)
        assert gptq.is_quantized_layer("p", set(f.keys()))
        assert not gptq.is_quantized_layer("q", set(f.keys()))
    assert set(buffers) == {"weight_packed", "weight_scale", "weight_zero_point"}
    layer = quant_linear_from_buffers(scheme, buffers, 64, 32)
    assert np.array_equal(layer.dequantize_weight(torch.float64).numpy(), w64)


@pytest.mark.parametrize("change,match", [
    ({"bits": 5}, "'bits'"), ({"checkpoint_format": "marlin"}, "checkpoint_format"),
    ({"quant_method": "awq"}, "quant_method"), ({"pack_dtype": "int16"}, "pack_dtype"),
    ({"group_size": 0}, "group_size")])
def test_bad_config_is_refused(change, match):
    cfg = {"quant_method": "gptq", "bits": 4, "group_size": 32, **change}
    with pytest.raises(ValueError, match=match):
        gptq.read_layer(lambda name: None, "p", cfg, 64, 32)


@pytest.mark.parametrize("key,bad,match", [
    ("qweight", lambda t: t[:-1], r"'p.qweight'.*expected shape \(8, 32\).*found \(7, 32\)"),
    ("qzeros", lambda t: t.to(torch.int64), r"'p.qzeros'.*expected dtype torch.int32"),
    ("scales", lambda t: t.t().contiguous(), r"'p.scales'.*expected shape \(2, 32\)"),
    ("g_idx", lambda t: t + 5, r"'p.g_idx'.*group indices in \[0, 2\)")])
def test_bad_tensor_is_refused(key, bad, match, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    tensors, _ = make_gptq_layer(64, 32, 4, 32, True, False, "gptq", gen)
    tensors[key] = bad(tensors[key])
    with pytest.raises(ValueError, match=match):
        _read(tensors, "p", {"bits": 4, "group_size": 32}, 64, 32)


def test_legacy_config_files(tmp_path):
    from qrt.formats.legacy import legacy_quant_config, lone_safetensors
    assert legacy_quant_config(tmp_path) is None and lone_safetensors(tmp_path) is None
    (tmp_path / "quant_config.json").write_text('{"w_bit": 4, "q_group_size": 128, "version": "GEMM"}')
    assert legacy_quant_config(tmp_path) == {"quant_method": "awq", "w_bit": 4, "q_group_size": 128,
                                             "version": "GEMM"}
    (tmp_path / "quantize_config.json").write_text("[1]")
    with pytest.raises(ValueError, match="quantize_config.json: expected a JSON object"):
        legacy_quant_config(tmp_path)
    (tmp_path / "a.safetensors").write_bytes(b"")
    assert lone_safetensors(tmp_path) == "a.safetensors"
    (tmp_path / "b.safetensors").write_bytes(b"")
    assert lone_safetensors(tmp_path) is None
