"""Int8-activation GEMMs on tensor cores: int8 x int8 -> int32, fused dequant epilogue.

  y [M, N] = sx[m] * sum_g sw[n, g] * sum_{k in g} (xq[m, k] - xzp[m]) * wq[n, k]  (+ bias[n])

xq int8 [M, K] with per-token scale sx fp32 [M] (and optional zero point xzp int32 [M]),
from act_quant.quant_rows. Weights, symmetric:
  W_BITS=8: int8 [N, K] (unpacked once from the checkpoint at load time);
  W_BITS=4: int32 [N, ceil(K/8)], the compressed-tensors layout (LSB first, stored
            q + 8), unpacked to int8 inside the K loop (W4A8, torchao's 8da4w).
Scales sw fp32 [N, G]: GROUP_SIZE=0 means per channel (G=1): one exact int32 dot over
all of K, scaled once. GROUP_SIZE>0: each group's int32 partial sum is scaled by its
group scale and added in fp32; the last group may be ragged. Asymmetric activations
subtract xzp[m] * w_sums[n, g] (w_sums = per-group row sums of wq) from each int32
partial, so the int8 dot stays unsigned-free and exact. Output: out_dtype.
A row whose sx is NaN (inf/NaN activations) gives a NaN output row, and only that row.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .arg_checks import check_a8_weights
from .launch import launch


@triton.jit
def load_int_weights(w_ptr, offs_n, k0, N, K, stride_wn, stride_wk, W_BITS: tl.constexpr,
                     BLOCK_K: tl.constexpr):
    """Weight tile [BLOCK_N, BLOCK_K] of columns k0 .. k0+BLOCK_K-1 as int8 signed values;
    out-of-range entries are 0 (unpacked 8-bit) or -8 (packed 4-bit); the matching
    activations are 0 either way. 4-bit: each int32 word is loaded once and its 8 nibbles
    (element k at bits 4*(k % 8)) shifted out in registers."""
    if W_BITS == 8:
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=mask, other=0)
    else:
        offs_w = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        mask = (offs_n[:, None] < N) & (offs_w[None, :] < tl.cdiv(K, 8))
        words = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :] * stride_wk, mask=mask, other=0)
        shifts = tl.arange(0, 8) * 4
        nibbles = ((words[:, :, None] >> shifts[None, None, :]) & 0xF) - 8    # [BLOCK_N, words, 8]
        w = tl.reshape(nibbles, (words.shape[0], BLOCK_K)).to(tl.int8)
    return w


@triton.jit
def _a8_matmul_kernel(
    # pointers
    x_ptr, xs_ptr, xzp_ptr, w_ptr, ws_ptr, wsum_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K, N_GROUPS,
    # strides
    stride_xm, stride_wn, stride_wk, stride_ym,
    # quant params
    W_BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_XZP: tl.constexpr, HAS_BIAS: tl.constexpr,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- tile of C this program owns; GROUP_M rows of tiles share weight columns in L2 ------
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_id = pid // (GROUP_M * num_pid_n)
    first_m = group_id * GROUP_M
    group_rows = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_pid_n)) % group_rows
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_rows
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    mask_m = offs_m < M
    mask_n = offs_n < N
    if HAS_XZP:
        xzp = tl.load(xzp_ptr + offs_m, mask=mask_m, other=0)

    # -- main loop: exact int32 dots, scaled per channel (once) or per group --------------
    if GROUP_SIZE == 0:
        acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            a = tl.load(x_rows + k0 + offs_k[None, :], mask=mask_m[:, None] & (k0 + offs_k[None, :] < K), other=0)
            b = load_int_weights(w_ptr, offs_n, k0, N, K, stride_wn, stride_wk, W_BITS, BLOCK_K)
            acc_i = tl.dot(a, tl.trans(b), acc_i, out_dtype=tl.int32)
        if HAS_XZP:
            acc_i -= xzp[:, None] * tl.load(wsum_ptr + offs_n, mask=mask_n, other=0)[None, :]
        acc = acc_i.to(tl.float32) * tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for g in range(0, N_GROUPS):
            acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            for i in tl.static_range(GROUP_SIZE // BLOCK_K):
                k = g * GROUP_SIZE + i * BLOCK_K + offs_k
                a = tl.load(x_rows + k[None, :], mask=mask_m[:, None] & (k[None, :] < K), other=0)
                b = load_int_weights(w_ptr, offs_n, g * GROUP_SIZE + i * BLOCK_K, N, K, stride_wn, stride_wk,
                                     W_BITS, BLOCK_K)
                acc_i = tl.dot(a, tl.trans(b), acc_i, out_dtype=tl.int32)
            if HAS_XZP:
                acc_i -= xzp[:, None] * tl.load(wsum_ptr + offs_n * N_GROUPS + g, mask=mask_n, other=0)[None, :]
            acc += acc_i.to(tl.float32) * tl.load(ws_ptr + offs_n * N_GROUPS + g, mask=mask_n, other=0.0)[None, :]

    # -- epilogue: per-token scale, bias, cast to the activation dtype ----------------------
    acc = acc * tl.load(xs_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def a8_matmul(xq: torch.Tensor, sx: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, *,
              w_bits: int, group_size: int, bias: torch.Tensor | None, out_dtype: torch.dtype,
              x_zp: torch.Tensor | None = None, w_sums: torch.Tensor | None = None,
              block_m: int = 64, block_n: int = 64, block_k: int = 64, group_m: int = 8,
              num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """xq int8 [M, K], sx fp32 [M], w (see module notes), w_scales fp32 [N, G] ->
    y [M, N] in out_dtype. x_zp int32 [M] needs w_sums int32 [N, G]."""
    if xq.dtype != torch.int8 or xq.ndim != 2 or xq.stride(1) != 1:
        raise ValueError(f"xq must be int8 [M, K] contiguous along K, found {xq.dtype} {tuple(xq.shape)}")
    m, k = xq.shape
    n = check_a8_weights(w, w_scales, w_bits, group_size, k)
    if sx.dtype != torch.float32 or tuple(sx.shape) != (m,):
        raise ValueError(f"sx must be fp32 [{m}], found {sx.dtype} {tuple(sx.shape)}")
    if (x_zp is None) != (w_sums is None):
        raise ValueError("asymmetric activations need both x_zp and w_sums")
    if w_sums is not None and (tuple(w_sums.shape) != tuple(w_scales.shape) or w_sums.dtype != torch.int32
                               or not w_sums.is_contiguous()):
        raise ValueError(f"w_sums must be contiguous int32 {tuple(w_scales.shape)}, found "
                         f"{w_sums.dtype} {tuple(w_sums.shape)}")
    if group_size and group_size % block_k:
        raise ValueError(f"block_k {block_k} must divide group_size {group_size}")
    y = torch.empty((m, n), dtype=out_dtype, device=xq.device)
    if m == 0 or n == 0:
        return y
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    launch(_a8_matmul_kernel, grid, (
        xq, sx, x_zp if x_zp is not None else sx, w, w_scales, w_sums if w_sums is not None else w_scales,
        bias if bias is not None else w_scales, y,
        m, n, k, w_scales.shape[1],
        xq.stride(0), w.stride(0), w.stride(1), y.stride(0)),
        W_BITS=w_bits, GROUP_SIZE=group_size, HAS_XZP=x_zp is not None, HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m,
        num_warps=num_warps, num_stages=num_stages)
    return y
