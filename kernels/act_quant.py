"""Int8 activation quantization: dynamic per-token (one scale per row) or static per-tensor.

x [M, K] (fp16 / bf16 / fp32) -> q int8 [M, K], scale fp32 [M], zero point int32 [M].

  symmetric (default):  scale = absmax(row) / 127,            q = clamp(round(x / scale), -128, 127)
  asymmetric:           scale = (max(row,0) - min(row,0)) / 255, zp = round(-128 - min / scale),
                        q = clamp(round(x / scale) + zp, -128, 127)
  static:               scale = the calibrated per-tensor scale (symmetric)
Dequantized: (q - zp) * scale. `x / scale` is computed as `x * (1 / scale)` (one IEEE
division per row), round is round-half-to-even (torch.round); the twin in
reference.py does the same fp32 operations in the same order, and the kernels that
quantize are compiled without FMA contraction, so q matches the twin exactly.

Edge cases (the contract the GEMMs and tests rely on):
  * a row of zeros: scale 0, q = 0 (1/scale is never taken), so the GEMM gives exactly
    bias for that token -- never NaN;
  * a row with an inf or NaN anywhere: its scale is NaN and its q all zero (zp for
    asymmetric), so the GEMM output of THAT token is NaN and every other token is
    unaffected (no NaN spreads across rows, no silent saturation to +-127);
  * huge finite outliers only coarsen their own row's scale.

One pass over x: a row of up to MAX_SINGLE_BLOCK elements is loaded once and kept in
registers; longer rows take a second read (min/max, then quantize).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .arg_checks import check_act_input
from .launch import launch

MAX_SINGLE_BLOCK = 16384  # elements per row held in registers (64 KiB of fp32 per program)


@triton.jit
def round_half_even(v):
    """Nearest integer, ties to even, for fp32 |v| < 2^22. Adding 1.5 * 2^23 pushes the
    fraction out of the fp32 mantissa, so the FPU's round-to-nearest-even rounds; taking
    it back off is exact. Same result in the interpreter (numpy) and on GPU, no libdevice."""
    return (v + 12582912.0) - 12582912.0


@triton.jit
def token_qparams(lo, hi, n_bad, SYMMETRIC: tl.constexpr):
    """Per-row (scale, 1/scale, zero point) from lo = min(row, 0), hi = max(row, 0) over
    the finite values, and n_bad = count of inf/NaN in the row (see the module notes)."""
    if SYMMETRIC:
        scale = tl.math.div_rn(tl.maximum(-lo, hi), 127.0)
    else:
        scale = tl.math.div_rn(hi - lo, 255.0)
    # a zero row has scale 0: use 1/scale = 0 so q = 0 instead of 0 * inf = NaN
    inv = tl.where(scale > 0.0, tl.math.div_rn(1.0, tl.where(scale > 0.0, scale, 1.0)), 0.0)
    inv = tl.where(n_bad > 0, 0.0, inv)
    if SYMMETRIC:
        zp = tl.zeros_like(scale)
    else:
        zp = round_half_even(tl.minimum(tl.maximum(-128.0 - lo * inv, -128.0), 127.0))
    scale = tl.where(n_bad > 0, float("nan"), scale)
    return scale, inv, zp


@triton.jit
def static_qparams(s, n_bad):
    """(scale, 1/scale, zero point 0) for a calibrated per-tensor scale s; NaN scale and
    1/scale = 0 for a row holding inf/NaN, as token_qparams."""
    inv = tl.where((s > 0.0) & (n_bad == 0), tl.math.div_rn(1.0, tl.where(s > 0.0, s, 1.0)), 0.0)
    scale = tl.where(n_bad > 0, float("nan"), s)
    return scale, inv, tl.zeros_like(scale)


@triton.jit
def quantize_block(x, inv, zp, SYMMETRIC: tl.constexpr):
    """fp32 block x -> int32 q (values in [-128, 127]); inf/NaN entries count as 0."""
    v = tl.where(tl.abs(x) < float("inf"), x, 0.0) * inv
    if SYMMETRIC:
        q = round_half_even(tl.minimum(tl.maximum(v, -128.0), 127.0))
    else:
        q = round_half_even(tl.minimum(tl.maximum(v, -256.0), 256.0)) + zp
        q = tl.minimum(tl.maximum(q, -128.0), 127.0)
    return q.to(tl.int32)


@triton.jit
def row_stats(x):
    """fp32 block -> (min over finite values, max over finite values, count of inf/NaN).
    Non-finite values are masked before min/max, whose NaN handling differs by backend."""
    finite = tl.abs(x) < float("inf")
    xf = tl.where(finite, x, 0.0)
    return tl.min(xf, axis=0), tl.max(xf, axis=0), tl.sum((~finite).to(tl.int32), axis=0)


@triton.jit
def row_stats_looped(x_row, K, BLOCK_K: tl.constexpr):
    """(min(row, 0), max(row, 0), count of inf/NaN) of the K values at x_row, read
    BLOCK_K at a time (the running extremes start at 0)."""
    offs_k = tl.arange(0, BLOCK_K)
    lo = 0.0
    hi = 0.0
    n_bad = 0
    for k0 in range(0, K, BLOCK_K):
        xb = tl.load(x_row + k0 + offs_k, mask=k0 + offs_k < K, other=0.0).to(tl.float32)
        b_lo, b_hi, b_bad = row_stats(xb)
        lo = tl.minimum(lo, b_lo)
        hi = tl.maximum(hi, b_hi)
        n_bad += b_bad
    return lo, hi, n_bad


@triton.jit
def _quant_per_token_kernel(
    # pointers
    x_ptr, q_ptr, scale_ptr, zp_ptr, static_scale_ptr,
    # sizes
    K,
    # strides
    stride_xm, stride_qm,
    # quant params
    SYMMETRIC: tl.constexpr, STATIC: tl.constexpr,
    # meta-parameters
    BLOCK_K: tl.constexpr, SINGLE_BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    q_row = q_ptr + row * stride_qm
    offs_k = tl.arange(0, BLOCK_K)

    # -- row statistics: min/max of the finite values and the count of inf/NaN ----------
    if SINGLE_BLOCK:
        x = tl.load(x_row + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
        lo, hi, n_bad = row_stats(x)
    else:
        lo, hi, n_bad = row_stats_looped(x_row, K, BLOCK_K)
    lo = tl.minimum(lo, 0.0)  # the range always holds 0 so a zero activation is exact
    hi = tl.maximum(hi, 0.0)

    # -- qparams: computed per row, or the calibrated per-tensor scale --------------------
    if STATIC:
        scale, inv, zp = static_qparams(tl.load(static_scale_ptr).to(tl.float32), n_bad)
    else:
        scale, inv, zp = token_qparams(lo, hi, n_bad, SYMMETRIC)
    tl.store(scale_ptr + row, scale)
    tl.store(zp_ptr + row, zp.to(tl.int32))

    # -- quantize: from registers, or a second read for long rows ----------------------------
    if SINGLE_BLOCK:
        tl.store(q_row + offs_k, quantize_block(x, inv, zp, SYMMETRIC).to(tl.int8), mask=offs_k < K)
    else:
        for k0 in range(0, K, BLOCK_K):
            xb = tl.load(x_row + k0 + offs_k, mask=k0 + offs_k < K, other=0.0).to(tl.float32)
            tl.store(q_row + k0 + offs_k, quantize_block(xb, inv, zp, SYMMETRIC).to(tl.int8),
                     mask=k0 + offs_k < K)


def quant_rows(x: torch.Tensor, symmetric: bool = True, static_scale: torch.Tensor | None = None,
               num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q int8 [M, K], scale fp32 [M], zero point int32 [M]; 0 when symmetric).

    static_scale: fp32 [1] calibrated per-tensor scale (symmetric only), else per-token.
    """
    check_act_input(x)
    if static_scale is not None and (static_scale.numel() != 1 or not symmetric):
        raise ValueError(f"static quantization takes one symmetric scale, found "
                         f"{static_scale.numel()} values, symmetric={symmetric}")
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    scale = torch.empty(m, dtype=torch.float32, device=x.device)
    zp = torch.empty(m, dtype=torch.int32, device=x.device)
    if m == 0:
        return q, scale, zp
    single = k <= MAX_SINGLE_BLOCK
    block_k = triton.next_power_of_2(k) if single else 4096
    static = static_scale if static_scale is not None else scale  # unused pointer when dynamic
    launch(_quant_per_token_kernel, (m,), (x, q, scale, zp, static, k, x.stride(0), q.stride(0)),
        SYMMETRIC=symmetric, STATIC=static_scale is not None,
        BLOCK_K=block_k, SINGLE_BLOCK=single, num_warps=num_warps,
        enable_fp_fusion=False)  # no FMA contraction: q must equal the twin's rounding
    return q, scale, zp
