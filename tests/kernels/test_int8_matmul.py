"""W8A8 / W4A8 int8 GEMM and the fused small-M GEMV: kernels vs twins vs float64 math."""
import pytest
import torch

import qrt_kernels.ops  # noqa: F401  (registers torch.ops.qrt.*)
from qrt.numerics.packing import pack_int32
from qrt_kernels import dispatch
from qrt_kernels.int8_gemv import a8_gemv
from qrt_kernels.int8_matmul import a8_matmul
from qrt_kernels.reference import a8_gemv_ref, a8_matmul_ref, group_row_sums, quant_rows_ref

EPS32 = torch.finfo(torch.float32).eps
SMALL = dict(block_m=16, block_n=32, block_k=32)  # interpreter-sized tiles


def _weights(n, k, bits, group_size):
    """(kernel operand, int values [N, K], fp32 scales [N, G]) for a random layer."""
    lo, hi = (-128, 128) if bits == 8 else (-8, 8)
    q = torch.randint(lo, hi, (n, k), dtype=torch.int8)
    g = -(-k // group_size) if group_size else 1
    scales = torch.rand(n, g) * 0.01 + 1e-3
    return (q if bits == 8 else pack_int32(q, 4)), q, scales


def _float64_y(xq, sx, x_zp, q, scales, group_size, bias):
    """y64 and an error bound for fp32 evaluation: each of the <= G + 3 rounded fp32 ops
    adds <= 1 ulp of the running magnitude, bounded by sum_g |term_g| * |sx| + |bias|."""
    k = xq.shape[1]
    gs = group_size or k
    xi = xq.double() - (0 if x_zp is None else x_zp.double()[:, None])
    y = torch.zeros(xq.shape[0], q.shape[0], dtype=torch.float64)
    mag = torch.zeros_like(y)
    for g in range(scales.shape[1]):
        term = (xi[:, g * gs:(g + 1) * gs] @ q[:, g * gs:(g + 1) * gs].double().t()) * scales[:, g].double()
        y, mag = y + term, mag + term.abs()
    y, mag = y * sx.double()[:, None], mag * sx.double().abs()[:, None]
    if bias is not None:
        y, mag = y + bias.double(), mag + bias.double().abs()
    return y, (scales.shape[1] + 4) * EPS32 * mag


@pytest.mark.parametrize("bits,group_size", [(8, 0), (4, 32), (4, 0), (8, 64)])
def test_int8_dot_is_exact(bits, group_size, rng_seed):
    """Unit scales, fp32 out: every int32 partial (|.| <= 256 * 128 * 128 < 2^24) is exact
    in fp32, so y must equal the integer product exactly."""
    m, k, n = 17, 256, 48
    w, q, _ = _weights(n, k, bits, group_size)
    xq = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    ones = torch.ones(n, -(-k // group_size) if group_size else 1)
    y = a8_matmul(xq, torch.ones(m), w, ones, w_bits=bits, group_size=group_size, bias=None,
                  out_dtype=torch.float32, **SMALL)
    exact = xq.long() @ q.long().t()
    assert torch.equal(y.to(torch.int64), exact) and torch.equal(y, y.round())


@pytest.mark.parametrize("m", [1, 17, 64])
@pytest.mark.parametrize("bits,group_size,k", [(8, 0, 160), (4, 32, 200), (4, 64, 128)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_a8_matmul_vs_twin_vs_float64(m, bits, group_size, k, symmetric, rng_seed):
    n = 48
    w, q, scales = _weights(n, k, bits, group_size)
    x = torch.randn(m, k)
    xq, sx, zp = quant_rows_ref(x, symmetric)
    x_zp = None if symmetric else zp
    w_sums = None if symmetric else group_row_sums(q, group_size)
    bias = torch.randn(n)
    kw = dict(w_bits=bits, group_size=group_size, bias=bias, out_dtype=torch.float32, x_zp=x_zp, w_sums=w_sums)
    y = a8_matmul(xq, sx, w, scales, **kw, **SMALL)
    y_twin = a8_matmul_ref(xq, sx, w, scales, **kw)
    y64, bound = _float64_y(xq, sx, x_zp, q, scales, group_size, bias)
    assert ((y.double() - y64).abs() <= bound).all()
    assert ((y_twin.double() - y64).abs() <= bound).all()
    assert ((y - y_twin).abs() <= bound.float()).all()


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_int8_matmul_entry_point_out_dtype(out_dtype, rng_seed):
    m, k, n = 17, 96, 40
    w, q, scales = _weights(n, k, 8, 0)
    xq, sx, _ = quant_rows_ref(torch.randn(m, k))
    bias = torch.randn(n).to(out_dtype)
    y = dispatch.int8_matmul(xq, sx, w, scales[:, 0], bias, out_dtype)
    y64, bound = _float64_y(xq, sx, None, q, scales, 0, bias)
    assert y.dtype == out_dtype
    # fp16 output adds one final rounding: half an fp16 ulp of |y|
    tol = bound + (y64.abs() * 2.0 ** -11 if out_dtype == torch.float16 else 0)
    assert ((y.double() - y64).abs() <= tol).all()


def test_nonfinite_and_zero_tokens_stay_in_their_rows(rng_seed):
    m, k, n = 17, 128, 32
    w, q, scales = _weights(n, k, 4, 32)
    x = torch.randn(m, k)
    x[2, 4], x[5, 0], x[7, 9] = float("nan"), float("inf"), -float("inf")
    x[9] = 0.0
    x[11, 3] = 5e4  # outlier: its own row only
    bias = torch.randn(n)
    for y in (dispatch.a8_linear(x, w, scales, w_bits=4, group_size=32, bias=bias),          # GEMM
              dispatch.a8_linear(x[:4], w, scales, w_bits=4, group_size=32, bias=bias)):    # GEMV
        bad = torch.tensor([2]) if y.shape[0] == 4 else torch.tensor([2, 5, 7])
        assert y[bad].isnan().all()
        good = torch.ones(y.shape[0], dtype=torch.bool)
        good[bad] = False
        assert torch.isfinite(y[good]).all()
        clean = dispatch.a8_linear(x[:y.shape[0]][good], w, scales, w_bits=4, group_size=32, bias=bias)
        torch.testing.assert_close(y[good], clean, rtol=0, atol=0)  # per-token: rows independent
        if y.shape[0] > 9:
            assert torch.equal(y[9], bias)  # a zero token gives exactly the bias


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("bits,group_size", [(8, 0), (4, 32)])
@pytest.mark.parametrize("static", [False, True])
def test_fused_gemv_matches_quant_then_gemm(m, bits, group_size, static, rng_seed):
    """The small-M kernel quantizes exactly like quant_rows, so it equals the twin."""
    k, n = 200, 40
    w, q, scales = _weights(n, k, bits, group_size)
    x = torch.randn(m, k)
    bias = torch.randn(n)
    s = torch.tensor([0.015]) if static else None
    y = a8_gemv(x, w, scales, w_bits=bits, group_size=group_size, bias=bias, input_scale=s,
                block_n=16, block_k=32)
    y_twin = a8_gemv_ref(x, w, scales, w_bits=bits, group_size=group_size, bias=bias, input_scale=s)
    xq, sx, _ = quant_rows_ref(x, True, s)
    y64, bound = _float64_y(xq, sx, None, q, scales, group_size, bias)
    assert ((y.double() - y64).abs() <= bound).all()
    assert ((y - y_twin).abs() <= bound.float()).all()


def test_fused_gemv_asymmetric(rng_seed):
    k, n = 128, 32
    w, q, scales = _weights(n, k, 8, 0)
    x = torch.randn(2, k) + 1.5  # skewed: the zero point matters
    y = a8_gemv(x, w, scales, w_bits=8, group_size=0, bias=None, symmetric=False, block_n=16, block_k=64)
    xq, sx, zp = quant_rows_ref(x, False)
    y64, bound = _float64_y(xq, sx, zp, q, scales, 0, None)
    assert ((y.double() - y64).abs() <= bound).all()


@pytest.mark.parametrize("m", [1, 17, 64])
def test_dispatch_a8_linear_by_m(m, rng_seed):
    """Both sides of the M threshold give the twin's numerics in the activation dtype."""
    k, n = 128, 32
    w, q, scales = _weights(n, k, 4, 64)
    x = torch.randn(m, k, dtype=torch.float16)
    y = dispatch.a8_linear(x, w, scales, w_bits=4, group_size=64, bias=None)
    xq, sx, _ = quant_rows_ref(x)
    y64, bound = _float64_y(xq, sx, None, q, scales, 64, None)
    assert y.dtype == torch.float16 and y.shape == (m, n)
    assert ((y.double() - y64).abs() <= bound + y64.abs() * 2.0 ** -11).all()


def test_fake_shapes_and_bad_input():
    with torch._subclasses.fake_tensor.FakeTensorMode():
        y = torch.ops.qrt.a8_linear(torch.empty(9, 64, dtype=torch.float16), torch.empty(24, 8, dtype=torch.int32),
                                    torch.empty(24, 2), 4, 32, None, True, None, None)
        assert y.shape == (9, 24) and y.dtype == torch.float16
        with pytest.raises(ValueError, match="w_scales"):  # the fake runs the argument checks
            torch.ops.qrt.a8_linear(torch.empty(9, 64, dtype=torch.float16), torch.empty(24, 8, dtype=torch.int32),
                                    torch.empty(24, 3), 4, 32, None, True, None, None)
    xq = torch.zeros(2, 64, dtype=torch.int8)
    with pytest.raises(ValueError, match="packed int32"):
        a8_matmul(xq, torch.ones(2), torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 1), w_bits=4,
                  group_size=0, bias=None, out_dtype=torch.float32)
    with pytest.raises(ValueError, match="multiple of 16"):
        a8_matmul(xq, torch.ones(2), torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 8), w_bits=8,
                  group_size=8, bias=None, out_dtype=torch.float32)
    with pytest.raises(ValueError, match="w_scales"):
        a8_matmul(xq, torch.ones(2), torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 2), w_bits=8,
                  group_size=0, bias=None, out_dtype=torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="bf16 gives garbage under TRITON_INTERPRET; checked on GPU only")
@pytest.mark.parametrize("m", [1, 300])
def test_a8_linear_bf16_gpu(m, rng_seed):
    k, n = 4096, 1024
    w, q, scales = _weights(n, k, 8, 0)
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    y = dispatch.a8_linear(x, w.cuda(), scales.cuda(), w_bits=8, group_size=0)
    y_twin = a8_gemv_ref(x, w.cuda(), scales.cuda(), w_bits=8, group_size=0, bias=None)
    torch.testing.assert_close(y.float(), y_twin.float(), rtol=2 ** -7, atol=1e-3)  # bf16 output ulp
