"""Small-M int8-activation GEMV: per-token quantization fused into the matvec, one launch.

At decode (M of 1..8) the int8 schemes elsewhere pay a separate quantization launch plus
a tensor-core GEMM padded to 16+ rows; both dominate when the weight read is a few
microseconds. Here each program owns BLOCK_N output channels for all M tokens, one
token after the other:
  pass 1  min/max of its token's row (K floats, read from L2; W is the big read),
  pass 2  quantize the row block by block exactly as act_quant.quant_rows does and
          accumulate int32 dot products with the int8 (or unpacked int4) weight tile.
Same numerics as quant_rows + int8_matmul.a8_matmul (the quantized values are identical;
the int32 sums are exact), so the dispatcher can switch between them by M freely.
Asymmetric activations subtract the zero point from q inside the dot (no w_sums needed).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .act_quant import quantize_block, row_stats_looped, static_qparams, token_qparams
from .arg_checks import check_a8_weights
from .int8_matmul import load_int_weights
from .launch import launch


@triton.jit
def _a8_gemv_kernel(
    # pointers
    x_ptr, static_scale_ptr, w_ptr, ws_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K, N_GROUPS,
    # strides
    stride_xm, stride_wn, stride_wk, stride_ym,
    # quant params
    W_BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, SYMMETRIC: tl.constexpr, STATIC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    # meta-parameters
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    # all M tokens in one program: its [BLOCK_N, K] weight slice is re-read from L1/L2
    for row in range(0, M):
        x_row = x_ptr + row * stride_xm  # M is small here: no int32 overflow
        _gemv_row(x_row, static_scale_ptr, w_ptr, ws_ptr, bias_ptr, y_ptr + row * stride_ym,
                  offs_n, offs_k, mask_n, N, K, N_GROUPS, stride_wn, stride_wk,
                  W_BITS, GROUP_SIZE, SYMMETRIC, STATIC, HAS_BIAS, BLOCK_N, BLOCK_K)


@triton.jit
def _gemv_row(x_row, static_scale_ptr, w_ptr, ws_ptr, bias_ptr, y_row,
              offs_n, offs_k, mask_n, N, K, N_GROUPS, stride_wn, stride_wk,
              W_BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, SYMMETRIC: tl.constexpr,
              STATIC: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One token: y_row[offs_n] = its quantized row . W[offs_n, :] (scaled, + bias)."""
    # -- pass 1: this token's qparams, as act_quant computes them ------------------------
    lo, hi, n_bad = row_stats_looped(x_row, K, BLOCK_K)
    if STATIC:
        scale, inv, zp = static_qparams(tl.load(static_scale_ptr).to(tl.float32), n_bad)
    else:
        scale, inv, zp = token_qparams(lo, hi, n_bad, SYMMETRIC)

    # -- pass 2: quantize the row block by block, exact int32 dots per channel or group ---
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if GROUP_SIZE > 0:
        k_span = GROUP_SIZE
    else:
        k_span = K
    for g in range(0, N_GROUPS):
        acc_i = tl.zeros((BLOCK_N,), dtype=tl.int32)
        for k0 in range(g * k_span, min(g * k_span + k_span, K), BLOCK_K):
            k = k0 + offs_k
            xb = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
            q = quantize_block(xb, inv, zp, SYMMETRIC) - zp.to(tl.int32)
            q = tl.where(k < K, q, 0)
            w = load_int_weights(w_ptr, offs_n, k0, N, K, stride_wn, stride_wk, W_BITS, BLOCK_K).to(tl.int32)
            acc_i += tl.sum(w * q[None, :], axis=1)
        acc += acc_i.to(tl.float32) * tl.load(ws_ptr + offs_n * N_GROUPS + g, mask=mask_n, other=0.0)

    # -- epilogue: token scale, bias, cast ------------------------------------------------
    acc = acc * scale
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(y_row + offs_n, acc.to(y_row.dtype.element_ty), mask=mask_n)


def a8_gemv(x: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, *, w_bits: int,
            group_size: int, bias: torch.Tensor | None, symmetric: bool = True,
            input_scale: torch.Tensor | None = None, block_n: int = 32, block_k: int = 128,
            num_warps: int = 4) -> torch.Tensor:
    """x [M, K] fp16/bf16/fp32 -> y [M, N] in x.dtype; weights as in int8_matmul.
    input_scale fp32 [1]: static per-tensor scale (symmetric), else per-token dynamic."""
    if x.ndim != 2 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32) or x.stride(1) != 1:
        raise ValueError(f"x must be [M, K] fp16/bf16/fp32 contiguous along K, found {x.dtype} {tuple(x.shape)}")
    m, k = x.shape
    n = check_a8_weights(w, w_scales, w_bits, group_size, k)
    if input_scale is not None and (input_scale.numel() != 1 or not symmetric):
        raise ValueError(f"static quantization takes one symmetric scale, found "
                         f"{input_scale.numel()} values, symmetric={symmetric}")
    if group_size and group_size % block_k:
        raise ValueError(f"block_k {block_k} must divide group_size {group_size}")
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y
    grid = (triton.cdiv(n, block_n),)
    launch(_a8_gemv_kernel, grid, (
        x, input_scale if input_scale is not None else w_scales, w, w_scales,
        bias if bias is not None else w_scales, y,
        m, n, k, w_scales.shape[1],
        x.stride(0), w.stride(0), w.stride(1), y.stride(0)),
        W_BITS=w_bits, GROUP_SIZE=group_size, SYMMETRIC=symmetric, STATIC=input_scale is not None,
        HAS_BIAS=bias is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
        enable_fp_fusion=False)  # quantization must round exactly as act_quant does
    return y
