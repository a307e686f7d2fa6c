"""Per-token / static int8 activation quantization: Triton kernel vs twin vs float64 math."""
import pytest
import torch

import qrt_kernels.ops  # noqa: F401  (registers torch.ops.qrt.*)
from qrt_kernels import dispatch
from qrt_kernels.act_quant import MAX_SINGLE_BLOCK, quant_rows
from qrt_kernels.reference import quant_rows_ref

EPS32 = torch.finfo(torch.float32).eps


def _activations(m, k, dtype=torch.float32):
    x = torch.randn(m, k) * torch.rand(m, 1) * 4  # per-row magnitudes differ
    return x.to(dtype)


def _assert_q_matches_float64(x, q, scale, zp, symmetric):
    """q vs round(x / scale64 (+ zp)) in float64. fp32 computes scale and x * (1/scale)
    with <= 3 ulp relative error (< 4e-7), i.e. < 1e-4 in units of q for |x/s| <= 256,
    so q may differ from the float64 rounding only where x/s lies within 1e-4 of a tie."""
    x64 = x.double()
    lo, hi = x64.amin(1).clamp(max=0), x64.amax(1).clamp(min=0)
    s64 = torch.maximum(-lo, hi) / 127 if symmetric else (hi - lo) / 255
    torch.testing.assert_close(scale.double(), s64, rtol=2 * EPS32, atol=0)
    safe = torch.where(s64 > 0, s64, 1.0)
    v = x64 / safe[:, None]
    if symmetric:
        z = torch.zeros_like(s64)
    else:  # the zero point too may round the other way only next to a tie
        z64 = -128 - lo / safe
        z = zp.double()
        assert ((z == torch.round(z64).clamp(-128, 127)) | (((z64 - z64.floor()) - 0.5).abs() < 1e-4)).all()
    q64 = (torch.round(v) + z[:, None]).clamp(-128, 127)
    diff = q.double() != q64
    assert (q.double() - q64).abs().max() <= 1
    near_tie = ((v - v.floor()) - 0.5).abs() < 1e-4
    assert not (diff & ~near_tie).any(), "q differs from float64 away from a rounding tie"


@pytest.mark.parametrize("m", [1, 17, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quant_rows_kernel_twin_float64(m, symmetric, rng_seed):
    x = _activations(m, 160)
    q, scale, zp = quant_rows(x, symmetric)
    q_r, scale_r, zp_r = quant_rows_ref(x, symmetric)
    # identical fp32 operations in the same order: bit-exact
    assert torch.equal(q, q_r) and torch.equal(scale, scale_r) and torch.equal(zp, zp_r)
    _assert_q_matches_float64(x, q, scale, zp, symmetric)
    # dequantization error of a symmetric row is at most half a step
    if symmetric:
        assert ((q.float() * scale[:, None] - x).abs() <= scale[:, None] * (0.5 + 1e-5)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_quant_rows_long_rows_two_pass(dtype, rng_seed):
    """Rows longer than the register block take the two-read path; same result."""
    x = _activations(2, MAX_SINGLE_BLOCK + 300, dtype)
    q, scale, zp = quant_rows(x)
    q_r, scale_r, _ = quant_rows_ref(x)
    assert torch.equal(q, q_r) and torch.equal(scale, scale_r)
    _assert_q_matches_float64(x.float(), q, scale, zp, True)


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_rows_outliers_and_nonfinite(symmetric, rng_seed):
    x = _activations(6, 96)
    x[1] = 0.0                       # zero row: scale 0, q 0 (zp when asymmetric), no NaN
    x[2, 5] = 3e4                    # huge outlier: only its own row's scale grows
    x[3, 7] = float("nan")
    x[4, 0] = float("inf")
    x[5, 9] = -float("inf")
    q, scale, zp = quant_rows(x, symmetric)
    q_r, scale_r, zp_r = quant_rows_ref(x, symmetric)
    assert torch.equal(q, q_r) and torch.equal(zp, zp_r)
    assert torch.equal(scale.isnan(), scale_r.isnan()) and torch.equal(scale[:3], scale_r[:3])
    assert scale[1] == 0 and (q[1].int() - zp[1]).eq(0).all()
    assert scale[3:].isnan().all() and torch.isfinite(scale[:3]).all()
    assert (q[3:].int() == zp[3:, None]).all()          # non-finite rows carry no values
    assert q[2, 5] == 127 and scale[2] == pytest.approx(3e4 / 127 if symmetric else (3e4 - min(x[2].min().item(), 0)) / 255, rel=1e-6)
    # the other rows are quantized as if the bad rows were absent
    q0, s0, _ = quant_rows(x[[0]], symmetric)
    assert torch.equal(q0, q[[0]]) and torch.equal(s0, scale[[0]])


@pytest.mark.parametrize("m", [1, 17])
def test_quant_static(m, rng_seed):
    x = _activations(m, 128)
    x[0, 3] = float("nan")
    s = torch.tensor([0.02])         # small: clips the large values to +-127
    q, row_scale = dispatch.quant_static(x, s)
    q_r, row_scale_r, _ = quant_rows_ref(x, True, s)
    assert torch.equal(q, q_r)
    assert row_scale[0].isnan() and (row_scale[1:] == s).all()
    expected = torch.round((x[1:].double() / s.double()).clamp(-128, 127))
    near_tie = ((x[1:].double() / s.double()).frac().abs() - 0.5).abs() < 1e-4
    assert ((q[1:].double() == expected) | near_tie).all()
    assert (q[0] == 0).all()


def test_quant_dispatch_op_and_fake(rng_seed):
    x = _activations(5, 64)
    q, s, zp = dispatch.quant_per_token(x)
    assert zp is None and torch.equal(q, quant_rows_ref(x)[0])
    q_op, s_op, zp_op = torch.ops.qrt.quant_per_token(x, True)
    assert torch.equal(q_op, q) and torch.equal(s_op, s) and not zp_op.any()
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fx = torch.empty(7, 64)
        fq, fs, fz = torch.ops.qrt.quant_per_token(fx, False)
        assert fq.shape == (7, 64) and fq.dtype == torch.int8 and fs.shape == (7,) and fz.dtype == torch.int32


def test_quant_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[M, K\]"):
        quant_rows(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="fp16/bf16/fp32"):
        quant_rows(torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="one symmetric scale"):
        quant_rows(torch.randn(2, 4), symmetric=False, static_scale=torch.tensor([1.0]))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="bf16 gives garbage under TRITON_INTERPRET; checked on GPU only")
def test_quant_rows_bf16_gpu(rng_seed):
    x = _activations(33, 4096, torch.bfloat16).cuda()
    q, scale, zp = quant_rows(x)
    q_r, scale_r, _ = quant_rows_ref(x)
    assert torch.equal(q, q_r) and torch.equal(scale, scale_r)
