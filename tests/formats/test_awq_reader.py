"""AWQ GEMM reader vs tensors packed the AutoAWQ way (tests/formats/peer_formats.py) and
a float64 dequantization of them. Exact for the reason given in test_gptq_reader.py: a 4-bit
integer difference times an fp16 scale is exact in float32."""
import numpy as np
import pytest
import torch
from peer_formats import make_awq_layer, quant_linear_from_buffers

from qrt.formats import awq


def _read(tensors, prefix, cfg, k, n):
    named = {f"{prefix}.{key}": t for key, t in tensors.items()}
    return awq.read_layer(named.__getitem__, prefix, cfg, k, n)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_awq_layer_dequantizes_like_float64(group_size, rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    k, n = 128, 48
    tensors, w64 = make_awq_layer(k, n, group_size, gen)
    cfg = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}
    scheme, buffers = _read(tensors, "model.layers.0.self_attn.q_proj", cfg, k, n)
    assert (scheme.bits, scheme.symmetric, scheme.actorder) == (4, False, None)
    assert scheme.strategy == ("channel" if group_size == k else "group")
    layer = quant_linear_from_buffers(scheme, buffers, k, n)
    assert np.array_equal(layer.dequantize_weight(torch.float64).numpy(), w64)


def test_autoawq_config_keys_and_midpoint_zeros_read_as_symmetric(rng_seed):
    """AutoAWQ's own quant_config.json spelling (w_bit, q_group_size, "GEMM"); zeros all 8
    are the signed zero 0, i.e. the symmetric scheme with no zero-point buffer."""
    gen = torch.Generator().manual_seed(rng_seed)
    tensors, w64 = make_awq_layer(64, 16, 32, gen, zeros_value=8)
    scheme, buffers = _read(tensors, "p", {"w_bit": 4, "q_group_size": 32, "version": "GEMM"}, 64, 16)
    assert scheme.symmetric and "weight_zero_point" not in buffers
    layer = quant_linear_from_buffers(scheme, buffers, 64, 16)
    assert np.array_equal(layer.dequantize_weight(torch.float64).numpy(), w64)


def test_unpack_order_is_autoawq_order():
    """Word 0x76543210 holds nibble i = i: column AWQ_ORDER[i] gets value i."""
    word = torch.tensor([[0x76543210]], dtype=torch.int32)
    assert awq.unpack_awq(word).tolist() == [[0, 4, 1, 5, 2, 6, 3, 7]]


@pytest.mark.parametrize("change,match", [
    ({"version": "gemv"}, "GEMM layout"), ({"bits": 8}, "'bits'"), ({"zero_point": False}, "zero_point"),
    ({"quant_method": "gptq"}, "quant_method"), ({"group_size": -1}, "group_size")])
def test_bad_config_is_refused(change, match):
    cfg = {"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm", **change}
    with pytest.raises(ValueError, match=match):
        awq.read_layer(lambda name: None, "p", cfg, 64, 16)


def test_bad_tensor_is_refused(rng_seed):
    gen = torch.Generator().manual_seed(rng_seed)
    tensors, _ = make_awq_layer(64, 16, 32, gen)
    tensors["qweight"] = tensors["qweight"].t().contiguous()
    with pytest.raises(ValueError, match=r"'p.qweight'.*expected shape \(64, 2\).*found \(2, 64\)"):
        _read(tensors, "p", {"bits": 4, "group_size": 32}, 64, 16)
