"""QuantLinear W8A8 / W4A8 forward on the CPU torch path vs float64 math of the same
quantized numerics (the tokens' int8 values and scales, the layer's stored weights)."""
import os

import pytest
import torch

from qrt.numerics.quant import QuantizedWeight, quantize_weight
from qrt.runtime.linear import QuantLinear
from qrt.schemes import ActivationScheme, resolve_scheme
from qrt_kernels.reference import quant_rows_ref

EPS32 = torch.finfo(torch.float32).eps


def reference_y(layer, x, input_scale=None, symmetric=True):
    """float64 y = sx * sum_g s_g * (xq . wq)_g + bias, with xq/sx from the quantization
    twin (itself checked against float64 in tests/kernels) and q/scales from the layer.
    Returns (y64 [M, N], bound): the fp32 epilogue rounds <= G + 4 times, each <= 1 ulp of
    the running magnitude sum_g |term_g| * sx + |bias|."""
    x2 = x.reshape(-1, x.shape[-1])
    xq, sx, zp = quant_rows_ref(x2, symmetric, input_scale)
    xi = xq.double() - (0 if symmetric else zp.double()[:, None])
    qw = layer.qweight()
    k = layer.in_features
    gs = layer.group_size
    cols = torch.arange(k) if qw.g_idx is None else qw.g_idx.long()
    y = torch.zeros(x2.shape[0], layer.out_features, dtype=torch.float64)
    mag = torch.zeros_like(y)
    for g in range(qw.scale.shape[1]):
        sel = (cols // gs == g) if qw.g_idx is None else (cols == g)
        term = (xi[:, sel] @ qw.q[:, sel].double().t()) * qw.scale[:, g].double()
        y, mag = y + term, mag + term.abs()
    y, mag = y * sx.double()[:, None], mag * sx.double().abs()[:, None]
    if layer.bias is not None:
        y, mag = y + layer.bias.double(), mag + layer.bias.double().abs()
    return y, (qw.scale.shape[1] + 4) * EPS32 * mag


def pack_extra(layer, x, input_scale=None):
    """What the int8pack_a8 backend adds to the bound: its bf16 output of the integer dot
    rounds by 2^-8 relative (qrt.runtime.int8_pack_a8; exactness of the dot itself and the
    kernel against torch._int_mm: test_int8_pack_a8.py); 0 for the exact int32 backends."""
    if layer._runtime.backend != "int8pack_a8":
        return 0.0
    xq, sx, _ = quant_rows_ref(x.reshape(-1, x.shape[-1]), True, input_scale)
    dot = (xq.double() @ layer.qweight().q.double().t()).abs()
    return 2.0 ** -8 * dot * layer.qweight().scale.double().reshape(-1) * sx.double().abs()[:, None]


CPU_A8 = {"w8a8": ["int8pack_a8", "int_mm"], "w4a8": ["int_mm"], "w4a8-g32": ["int_mm"]}


@pytest.mark.parametrize("scheme,backend", [(s, b) for s, bs in CPU_A8.items() for b in bs])
@pytest.mark.parametrize("m", [1, 17, 64])
def test_from_linear_forward_cpu(scheme, backend, m, rng_seed):
    lin = torch.nn.Linear(200, 48)  # 200: ragged last group for w4a8 (g128 and g32)
    layer = QuantLinear.from_linear(lin, scheme)
    layer.finalize(backend)
    x = torch.randn(m, 200)
    y = layer(x)
    y64, bound = reference_y(layer, x)
    bound = bound + pack_extra(layer, x)
    assert y.shape == (m, 48) and y.dtype == torch.float32
    assert ((y.double() - y64).abs() <= bound).all()
    # and it is a sane approximation of the float layer (catches a shared misreading of
    # the weights): int8 tokens + int4/int8 weights stay within a few % of the output scale
    rel = (y - lin(x)).norm() / lin(x).norm()
    assert rel < (0.02 if scheme == "w8a8" else 0.2)


@pytest.mark.parametrize("m", [1, 70])  # 4 groups: block-diagonal and per-group _int_mm on CPU
def test_asymmetric_tokens(m, rng_seed):
    scheme = resolve_scheme("w4a8-g32").replace(activations=ActivationScheme(symmetric=False))
    layer = QuantLinear.from_linear(torch.nn.Linear(128, 24), scheme)
    x = torch.randn(m, 128) + 2.0  # skewed, so the zero points matter
    y64, bound = reference_y(layer, x, symmetric=False)
    assert ((layer(x).double() - y64).abs() <= bound).all()


@pytest.mark.parametrize("backend", CPU_A8["w8a8"])
def test_leading_dims_and_fp16(backend, rng_seed):
    layer = QuantLinear.from_linear(torch.nn.Linear(64, 32).half(), "w8a8")
    layer.finalize(backend)
    x = torch.randn(2, 3, 64, dtype=torch.float16)
    y = layer(x)
    assert y.shape == (2, 3, 32) and y.dtype == torch.float16
    y64, bound = reference_y(layer, x)
    bound = bound + pack_extra(layer, x)
    assert ((y.double().reshape(6, 32) - y64).abs() <= bound + y64.abs() * 2.0 ** -11).all()


def test_act_order_g_idx(rng_seed):
    """GPTQ act order: groups are permuted columns; the runtime reorders K once."""
    scheme = resolve_scheme("w4a8-g32")
    w = torch.randn(24, 96)
    perm = torch.randperm(96)
    g_idx = torch.empty(96, dtype=torch.int32)
    g_idx[perm] = (torch.arange(96) // 32).to(torch.int32)  # column perm[i] is in group i // 32
    qw = quantize_weight(w[:, perm], scheme)                # quantize in act order...
    q = torch.empty_like(qw.q)
    q[:, perm] = qw.q                                       # ...store in original order
    layer = QuantLinear.from_quantized(QuantizedWeight(q, qw.scale, None, g_idx), scheme, dtype=torch.float32)
    x = torch.randn(5, 96)
    y64, bound = reference_y(layer, x)
    assert ((layer(x).double() - y64).abs() <= bound).all()


def test_nonfinite_zero_and_outlier_tokens(rng_seed):
    layer = QuantLinear.from_linear(torch.nn.Linear(128, 16), "w4a8-g64")
    x = torch.randn(6, 128)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    x[3] = 0.0
    x[4, 7] = 1e5
    y = layer(x)
    assert y[1:3].isnan().all() and torch.isfinite(y[[0, 3, 4, 5]]).all()
    assert torch.equal(y[3], layer.bias.detach())
    keep = [0, 3, 4, 5]
    assert torch.equal(y[keep], layer(x[keep]))


def test_bad_input_shape():
    layer = QuantLinear.from_linear(torch.nn.Linear(64, 8), "w8a8")
    with pytest.raises(ValueError, match=r"\[\.\.\., 64\]"):
        layer(torch.randn(3, 65))


@pytest.mark.parametrize("backend", CPU_A8["w8a8"])
def test_static_layer_needs_calibration(backend, rng_seed):
    layer = QuantLinear.from_linear(torch.nn.Linear(64, 8), "w8a8-static")
    layer.finalize(backend)
    with pytest.raises(ValueError, match="calibrate"):
        layer(torch.randn(3, 64))
    layer.input_scale.fill_(0.03)
    x = torch.randn(3, 64)
    y64, bound = reference_y(layer, x, layer.input_scale)
    bound = bound + pack_extra(layer, x, layer.input_scale)
    assert ((layer(x).double() - y64).abs() <= bound).all()
    x[1, 2] = float("inf")  # static: the token is NaN, not silently clipped to 127
    y = layer(x)
    assert y[1].isnan().all() and torch.isfinite(y[[0, 2]]).all()


def test_unsupported_weight_bits():
    layer = QuantLinear.from_linear(torch.nn.Linear(64, 8), resolve_scheme("w8a8").replace(bits=2))
    with pytest.raises(ValueError, match="4, 8"):
        layer(torch.randn(1, 64))


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the Triton backend runs on the CPU only under TRITON_INTERPRET")
@pytest.mark.parametrize("scheme", ["w8a8", "w4a8-g32"])
@pytest.mark.parametrize("m", [1, 33])  # GEMV (fused quantize) and GEMM paths of the dispatch
def test_triton_backend_through_quantlinear(scheme, m, rng_seed, monkeypatch):
    """finalize(backend="triton") builds the kernel layout once and forward runs the Triton
    kernels (here interpreted on the CPU tensors): the same float64 reference and bound."""
    from qrt_kernels import dispatch
    calls = []
    real = dispatch.a8_linear
    monkeypatch.setattr(dispatch, "a8_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = QuantLinear.from_linear(torch.nn.Linear(96, 40), scheme)
    layer.finalize(backend="triton")
    x = torch.randn(m, 96)
    y = layer(x)
    assert layer._runtime.backend == "triton" and len(calls) == 1
    y64, bound = reference_y(layer, x)
    assert ((y.double() - y64).abs() <= bound).all()
    layer.finalize(backend="int_mm")  # the CPU path: never enters the kernels
    assert ((layer(x).double() - y64).abs() <= bound).all() and len(calls) == 1
