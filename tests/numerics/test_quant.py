"""RTN math against float64 re-derivations and against compressed-tensors' calculate_qparams."""
import pytest
import torch

from qrt.numerics.quant import compute_qparams, dequantize, quantize, quantize_weight
from qrt.schemes import QuantScheme

SCHEMES = [QuantScheme(bits=b, group_size=g, symmetric=sym)
           for b in (2, 3, 4, 8) for g in (32, 128) for sym in (True, False)] + [
    QuantScheme(bits=8, strategy="channel", group_size=None),
    QuantScheme(bits=4, strategy="channel", group_size=None, symmetric=False),
    QuantScheme(bits=8, strategy="tensor", group_size=None)]


def _f64_reference(w, s: QuantScheme):
    """Independent float64 RTN: per-group min/max by explicit loops over groups."""
    out_f, in_f = w.shape
    gs = s.effective_group_size(in_f)
    w64 = w.double()
    what = torch.empty_like(w64)
    qmin, qmax = s.qmin, s.qmax
    for g0 in range(0, in_f, gs):
        blk = w64[:, g0:g0 + gs] if s.strategy != "tensor" else w64
        lo = blk.amin(dim=1, keepdim=True).clamp(max=0)
        hi = blk.amax(dim=1, keepdim=True).clamp(min=0)
        if s.strategy == "tensor":
            lo, hi = lo.min().expand_as(lo), hi.max().expand_as(hi)
        if s.symmetric:
            scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
            zero = torch.zeros_like(scale)
        else:
            scale = (hi - lo) / (qmax - qmin)
            zero = torch.round(qmin - lo / scale).clamp(qmin, qmax)
        cols = w64[:, g0:g0 + gs]
        q = torch.round(cols / scale + zero).clamp(qmin, qmax)
        what[:, g0:g0 + gs] = (q - zero) * scale
    return what


@pytest.mark.parametrize("s", SCHEMES, ids=str)
@pytest.mark.parametrize("in_f", [96, 200])  # 200: ragged last group for g in (32, 128)
def test_rtn_matches_float64(s, in_f, rng_seed):
    w = torch.randn(24, in_f, dtype=torch.float32) * 0.05
    qw = quantize_weight(w, s, scale_dtype=torch.float32)
    gs = s.effective_group_size(in_f)
    step_cols = qw.scale.double().repeat_interleave(gs, 1)[:, :in_f] if s.strategy != "tensor" \
        else qw.scale.double().expand(24, in_f)
    zero = 0 if qw.zero is None else qw.zero.double().repeat_interleave(gs, 1)[:, :in_f]
    what = (qw.q.double() - zero) * step_cols
    ref = _f64_reference(w, s)
    diff = (what - ref).abs() / step_cols
    # Our scale is fp32, the reference's fp64: they differ by <= 2 * 2^-24 relative (two
    # fp32 roundings: hi - lo, then the division), so a dequantized value differs by
    # <= |q - zero| * 2^-23 <= 2^bits * 2^-23 steps (3e-5 at 8 bits) unless rounding flipped.
    bound = 2.0 ** (s.bits - 23) * 1.01
    flip = diff > 0.5
    assert (diff[~flip] <= bound).all()
    assert (diff[flip] <= 1 + bound).all()  # a flip is one step, never more
    # Flips happen where w/scale sits within |q|*2^-24 of a .5 boundary. In symmetric mode
    # each group's absmax lands exactly on +-(qmax-qmin)/2, so it may flip every time;
    # anywhere else the chance is <= 2*256*2^-24 = 3e-5 per element.
    absw = w.abs()
    gmax = absw.max().expand_as(absw) if s.strategy == "tensor" else torch.stack(
        [absw[:, j - j % gs: j - j % gs + gs].amax(1) for j in range(in_f)], 1)
    interior = flip & (absw != gmax)
    assert interior.float().mean() < 1e-3
    assert qw.q.min() >= s.qmin and qw.q.max() <= s.qmax


@pytest.mark.parametrize("s", SCHEMES, ids=str)
def test_error_bound_half_step(s, rng_seed):
    w = torch.randn(16, 256) * 0.02
    qw = quantize_weight(w, s, scale_dtype=torch.float32)
    gs = s.effective_group_size(256)
    step = qw.scale.double().repeat_interleave(gs, 1)[:, :256] if s.strategy != "tensor" else qw.scale.double()
    zero = 0 if qw.zero is None else qw.zero.double().repeat_interleave(gs, 1)[:, :256]
    what = (qw.q.double() - zero) * step  # float64 product: no fp32 rounding of q*scale
    # Min-max ranges cover every value, so RTN error is at most half a step. Slack: w/scale
    # is formed in fp32, relative error 2^-24 on |q| <= 128, i.e. < 1e-5 of a step.
    assert ((w.double() - what).abs() <= step * (0.5 + 1e-5)).all()


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_qparams_match_compressed_tensors(bits, sym, rng_seed):
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.quantization.utils import calculate_qparams
    w = torch.randn(8, 256)
    args = ct.QuantizationArgs(num_bits=bits, symmetric=sym, strategy="group", group_size=64)
    g = w.reshape(8, 4, 64)
    ct_scale, ct_zero = calculate_qparams(g.amin(-1), g.amax(-1), args)
    scale, zero = compute_qparams(w, QuantScheme(bits=bits, group_size=64, symmetric=sym), torch.float32)
    torch.testing.assert_close(scale, ct_scale.float(), rtol=1e-6, atol=0)
    if sym:
        assert zero is None and (ct_zero == 0).all()
    else:
        assert torch.equal(zero.to(torch.int32), ct_zero.to(torch.int32))


def test_zero_weights_and_nan():
    qw = quantize_weight(torch.zeros(4, 64), QuantScheme(bits=4, group_size=32))
    assert (qw.q == 0).all() and torch.isfinite(qw.scale).all() and (qw.scale > 0).all()
    w = torch.randn(4, 64)
    w[2, 5] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/Inf \(first at index \[2, 5\]\)"):
        quantize_weight(w, QuantScheme())


def test_g_idx_dequant_equals_permuted(rng_seed):
    w = torch.randn(8, 64)
    s = QuantScheme(bits=4, group_size=16)
    scale, zero = compute_qparams(w, s)
    g_idx = torch.randperm(64) // 16  # shuffled group assignment
    q = quantize(w, scale, zero, 4, 16, g_idx=g_idx)
    deq = dequantize(q, scale, zero, 16, g_idx=g_idx)
    ref = q.float() * scale[:, g_idx]
    torch.testing.assert_close(deq, ref.to(deq.dtype))
