"""FP8 and FP4 kernels (Triton, run by TRITON_INTERPRET=1 on the CPU) against their
plain-torch twins, and the twins against float64 math.

What the interpreter cannot show: it emulates e4m3 and fp8 tl.dot with numpy float32
math, so the sm_89+/sm_90 FP8 MMA instructions, the real tensor-core accumulation order,
num_stages, warps and any timing are not exercised (the kernels are compiled for sm_90,
and the byte-decode path for sm_80, by bench/static_cases.py's captures; never run on a
GPU). The pre-Ada byte-decode path is run here through the launchers (native=False).
"""
import pytest
import torch

from qrt_kernels import dispatch
from qrt_kernels.reference import (E2M1_VALUES, e2m1_to_float, fp4_dequant_weight, fp4_matmul_ref,
                                   fp8_linear_ref, fp8_quant_rows_ref)

pytestmark = pytest.mark.skipif(not dispatch.triton_runs_on(torch.device("cpu")),
                                reason="needs TRITON_INTERPRET=1 (Triton on the CPU)")


def _fp8_weight(n, k, g):
    w = torch.randn(n, k, generator=g) * 0.05
    sw = w.abs().amax(dim=1) / 448.0
    return (w / sw[:, None]).to(torch.float8_e4m3fn), sw.float()


def _close(y, ref, x_dtype):
    # same products, fp32 sums in another order: a few fp32 ulps of |x| |w| K, plus one
    # rounding of the output to x's dtype
    tol = 1e-5 if x_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(y.float(), ref.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("act_fp8", [True, False])
@pytest.mark.parametrize("m,n,k", [(1, 64, 128), (5, 96, 200), (40, 130, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp8_linear_kernel_matches_twin(act_fp8, m, n, k, dtype):
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    w, sw = _fp8_weight(n, k, g)
    x = torch.randn(m, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    y = dispatch.fp8_linear(x, w, sw, bias, act_fp8)
    assert y.dtype == dtype and y.shape == (m, n)
    _close(y, fp8_linear_ref(x, w, sw, bias, act_fp8), dtype)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("m,n,k", [(3, 64, 128), (20, 70, 96)])
def test_fp8_kernels_pre_ada_byte_path_matches_twin(native, m, n, k):
    """native=False is the path below sm_89 (e4m3 bytes decoded to fp16 by integer ops)."""
    from qrt_kernels.fp8_matmul import fp8_matmul, fp8_quant_rows
    g = torch.Generator().manual_seed(m + n)
    w, sw = _fp8_weight(n, k, g)
    x = torch.randn(m, k, generator=g)
    xq, sx = fp8_quant_rows(x, native)
    cfg = dict(block_m=16, block_n=32, block_k=32)
    y = fp8_matmul(xq, w, sx, sw, None, torch.float32, native, **cfg)
    _close(y, fp8_linear_ref(x, w, sw, None, True), torch.float32)
    y_w = fp8_matmul(x.half(), w, None, sw, None, torch.float16, native, **cfg)
    _close(y_w, fp8_linear_ref(x.half(), w, sw, None, False), torch.float16)


@pytest.mark.parametrize("native", [True, False])
def test_fp8_quant_rows_kernel_is_bit_exact(native):
    from qrt_kernels.fp8_matmul import fp8_quant_rows
    x = torch.randn(7, 300) * torch.logspace(-3, 3, 7)[:, None]
    x[3] = 0.0  # a zero row: scale 0, q 0
    x[5, :4] = torch.tensor([1e-30, -3e-3, 448.0, 0.0])  # subnormal-range values after scaling
    q, s = fp8_quant_rows(x, native)
    q_ref, s_ref = fp8_quant_rows_ref(x)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8)) and torch.equal(s, s_ref)
    assert s[3] == 0 and (q[3].float() == 0).all()


def test_fp8_twin_against_float64():
    """The twin's W8A8-FP8 numbers from float64 math on the same FP8 values: per token,
    x / (max|x| / 448) rounded to e4m3 (relative step 2^-4 at most), products in float64."""
    g = torch.Generator().manual_seed(0)
    w, sw = _fp8_weight(48, 96, g)
    x = torch.randn(6, 96, generator=g, dtype=torch.float64)
    sx = x.abs().amax(dim=1) / 448.0
    xq = (x / sx[:, None]).to(torch.float8_e4m3fn).double()
    assert ((xq * sx[:, None] - x).abs() <= x.abs() * 2 ** -4 + 1e-12).all()  # e4m3: 3 mantissa bits
    ref = (xq @ w.double().t()) * sx[:, None] * sw.double()[None, :]
    y = fp8_linear_ref(x.float(), w, sw, None, act_fp8=True)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6)  # fp32 sums of exact products
    y_w = fp8_linear_ref(x.float(), w, sw, None, act_fp8=False)
    torch.testing.assert_close(y_w.double(), x @ (w.double() * sw.double()[:, None]).t(), rtol=1e-5, atol=1e-6)


def _fp4_weight(n, k, kind, g):
    packed = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8)
    if kind == "nvfp4":
        scales = (torch.rand(n, k // 16, generator=g) * 400 + 1).to(torch.float8_e4m3fn)
        return packed, scales, torch.tensor([2688.0 / 0.3]), 16
    return packed, torch.randint(115, 125, (n, k // 32), generator=g, dtype=torch.uint8), None, 32


@pytest.mark.parametrize("kind", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("m,n,k", [(1, 64, 128), (3, 80, 96), (33, 72, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp4_matmul_kernel_matches_twin(kind, m, n, k, dtype):
    g = torch.Generator().manual_seed(m + n + k)
    packed, scales, gs, group = _fp4_weight(n, k, kind, g)
    x = torch.randn(m, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    y = dispatch.fp4_matmul(x, packed, scales, gs, group, bias)
    assert y.dtype == dtype and y.shape == (m, n)
    _close(y, fp4_matmul_ref(x, packed, scales, gs, group, bias), dtype)


def test_fp4_dequant_twin_against_float64_table():
    """Every code in every nibble position, decoded by hand in float64."""
    codes = torch.arange(16, dtype=torch.uint8)
    table = torch.tensor([(-1.0 if c & 8 else 1.0) * E2M1_VALUES[c & 7] for c in range(16)], dtype=torch.float64)
    assert torch.equal(e2m1_to_float(codes).double(), table)
    packed = (codes[:, None] | (codes[None, :] << 4)).reshape(1, 256)  # byte = lo | hi << 4
    scales = torch.full((1, 512 // 32), 127 + 3, dtype=torch.uint8)  # 2^3
    w = fp4_dequant_weight(packed, scales, None, 32, 512).double()
    expect = torch.stack([table.repeat_interleave(16), table.repeat(16)], dim=1).reshape(1, 512) * 8.0
    assert torch.equal(w, expect)
