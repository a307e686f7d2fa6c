"""Tensor-core tile kernel for packed 2/4/8-bit weights: y = x @ dequant(W).T (+ bias).

Weights stay in the compressed-tensors layout: int32 [N, ceil(K*bits/32)], packed along K,
least-significant bits first, stored value u = q + 2^(bits-1); dequant(W) = (q - z) * s
with per-group scales/zeros [N, ceil(K/GROUP_SIZE)] (per-channel: GROUP_SIZE >= K).

dequant_matmul_tile_kernel: tl.dot tiles with x as A and the dequantized weight as B,
optional split-K (fp32 atomics, cast by the launcher); any group size (per-element scales
when no BLOCK_K divides the group). dispatch.py takes it only for groups the GEMV kernel
(gemv_a16.py, every other M <= 1024) cannot block. _dequant_tile is shared with dequant.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .a16_configs import A16Config
from .arg_checks import check_dequant_matmul_args
from .launch import launch


@triton.jit
def _load_q_tile(w_ptr, k0, offs_n, K, N, stride_wn, stride_wk,
                 BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """-> int32 [BLOCK_K, BLOCK_N] of the signed values q for columns k0 .. k0+BLOCK_K-1
    (k0 a multiple of BLOCK_K; values past K are junk and must meet x = 0 there)."""
    PER_WORD: tl.constexpr = 32 // BITS
    # load each packed word once: [BLOCK_K / PER_WORD, BLOCK_N] words hold the whole tile
    offs_kw = k0 // PER_WORD + tl.arange(0, BLOCK_K // PER_WORD)
    words = tl.load(w_ptr + offs_n[None, :] * stride_wn + offs_kw[:, None] * stride_wk,
                    mask=(offs_kw[:, None] < tl.cdiv(K, PER_WORD)) & (offs_n[None, :] < N), other=0)
    # value j of a word sits at bits [j*BITS, (j+1)*BITS), LSB first: shift out every j,
    # then flatten (word, j) -> k = word * PER_WORD + j
    shifts = tl.arange(0, PER_WORD) * BITS
    u = (words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)
    return tl.reshape(u, (BLOCK_K, words.shape[1])) - (1 << (BITS - 1))


@triton.jit
def _dequant_tile(w_ptr, scales_ptr, zeros_ptr, k0, offs_n, K, N,
                  stride_wn, stride_wk, stride_sn, stride_sg,
                  BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    """-> fp32 [BLOCK_K, BLOCK_N] of (q - z) * s, exact for fp16/bf16 scales; 0 past K."""
    q = _load_q_tile(w_ptr, k0, offs_n, K, N, stride_wn, stride_wk, BITS, BLOCK_K)
    # every element looks up its own group: right for any GROUP_SIZE and a ragged last group
    offs_k = k0 + tl.arange(0, BLOCK_K)
    g = offs_k[:, None] // GROUP_SIZE
    mask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
    qparam_offs = offs_n[None, :] * stride_sn + g * stride_sg
    # zeros has the scales' shape and (checked) contiguity, so it shares the scales' strides
    if HAS_ZEROS:
        q -= tl.load(zeros_ptr + qparam_offs, mask=mask, other=0).to(tl.int32)
    s = tl.load(scales_ptr + qparam_offs, mask=mask, other=0.0)
    return q.to(tl.float32) * s.to(tl.float32)


@triton.jit
def _store_output(acc, y_ptr, bias_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, pid_k,
                  HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr):
    # the bias is added once, by the first K slice
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    # one slice stores in x.dtype; several add their fp32 partial sums into a zeroed buffer
    if SPLIT_K == 1:
        tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ptrs, acc, mask=mask)


@triton.jit
def dequant_matmul_tile_kernel(
    # pointers
    x_ptr, w_ptr, scales_ptr, zeros_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K,
    # strides
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_ym, stride_yn,
    # quantization parameters
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr, HAS_BIAS: tl.constexpr,
    SCALE_AFTER_DOT: tl.constexpr,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # program -> (pid_m, pid_n) tile, grouped GROUP_M tiles along M so that programs running
    # together reuse the same weight tiles from L2 (the Triton tutorial's swizzle)
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_rows = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_rows)
    pid_n = (pid % num_pid_in_group) // group_rows
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, K, SPLIT_K * BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        if SCALE_AFTER_DOT:
            # the block lies inside one group: the integers q - z (|q - z| <= 255, exact in
            # fp16/bf16) go through the MMA, and the group's scale multiplies the fp32 sum,
            # so the only rounding is fp32 accumulation
            qparam_offs = offs_n * stride_sn + (k0 // GROUP_SIZE) * stride_sg
            q = _load_q_tile(w_ptr, k0, offs_n, K, N, stride_wn, stride_wk, BITS, BLOCK_K)
            if HAS_ZEROS:
                q -= tl.load(zeros_ptr + qparam_offs, mask=offs_n < N, other=0).to(tl.int32)[None, :]
            s = tl.load(scales_ptr + qparam_offs, mask=offs_n < N, other=0.0)
            acc += tl.dot(a, q.to(a.dtype), input_precision=DOT_PRECISION) * s.to(tl.float32)[None, :]
        else:
            # groups narrower than BLOCK_K (or not a multiple of it): scale each element,
            # then round the weight to x.dtype for the MMA
            w = _dequant_tile(w_ptr, scales_ptr, zeros_ptr, k0, offs_n, K, N, stride_wn,
                              stride_wk, stride_sn, stride_sg, BITS, GROUP_SIZE, HAS_ZEROS, BLOCK_K)
            acc += tl.dot(a, w.to(a.dtype), input_precision=DOT_PRECISION)
    _store_output(acc, y_ptr, bias_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, pid_k,
                  HAS_BIAS, SPLIT_K)


def _output(m: int, n: int, x: torch.Tensor, split_k: int) -> torch.Tensor:
    """y in x.dtype, or a zeroed fp32 buffer that the split-K slices add into."""
    if split_k == 1:
        return torch.empty(m, n, device=x.device, dtype=x.dtype)
    return torch.zeros(m, n, device=x.device, dtype=torch.float32)


def _common_args(x, w_packed, scales, zeros, bias, y, m, n, k):
    return (x, w_packed, scales, zeros, bias, y, m, n, k,
            x.stride(0), x.stride(1), w_packed.stride(0), w_packed.stride(1),
            scales.stride(0), scales.stride(1), y.stride(0), y.stride(1))


def _check_split_k(cfg: A16Config, kernel: str) -> int:
    if cfg.kernel != kernel or cfg.split_k is None:
        raise ValueError(f"config: expected kernel {kernel!r} with a resolved split_k, "
                         f"found kernel {cfg.kernel!r}, split_k {cfg.split_k!r}")
    return cfg.split_k


def dequant_matmul_tile(x, w_packed, scales, zeros, bits, group_size, bias=None, *, cfg: A16Config):
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias) with the tensor-core tile kernel."""
    m, n, k = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    split_k = _check_split_k(cfg, "tile")
    y = _output(m, n, x, split_k)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), split_k)
    launch(dequant_matmul_tile_kernel, grid, _common_args(x, w_packed, scales, zeros, bias, y, m, n, k),
        BITS=bits, GROUP_SIZE=group_size, HAS_ZEROS=zeros is not None, HAS_BIAS=bias is not None,
        SCALE_AFTER_DOT=group_size >= k or group_size % cfg.block_k == 0,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        SPLIT_K=split_k, DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return y if split_k == 1 else y.to(x.dtype)
