"""FP4 (e2m1) weight-only dequant-matmul: y = x @ dequant(W).T (+ bias), NVFP4 and MXFP4.

Weights stay in the compressed-tensors layout: uint8 [N, K/2], two e2m1 codes per byte, the
even column in the low nibble; code bit 3 is the sign, bits 0-2 index 0, .5, 1, 1.5, 2, 3, 4, 6.
Group scales [N, K/GROUP_SIZE]:
  NVFP4 (GROUP_SIZE 16): float8_e4m3fn, divided by the fp32 global scale (GLOBAL_SCALE).
  MXFP4 (GROUP_SIZE 32): uint8 e8m0 exponent e, scale 2^(e-127) built from its bits
                         (e = 0 reads as 0; it only ever scales all-zero groups).
e2m1 -> float without a table: the code's 3 magnitude bits placed at fp16 bits 9-11 are
that value times 2^-14 (subnormal 0.5 included), so one shift, one bitcast and one multiply.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fp8_matmul import e4m3_bytes_to_f16
from .launch import launch


@triton.jit
def _e2m1_to_f32(codes):
    """uint8 e2m1 codes -> fp32 values, exactly."""
    c = codes.to(tl.int16)
    bits = ((c & 8) << 12) | ((c & 7) << 9)
    return bits.to(tl.float16, bitcast=True).to(tl.float32) * 16384.0


@triton.jit
def fp4_matmul_kernel(
    # pointers
    x_ptr, w_ptr, scales_ptr, global_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K,
    # strides
    stride_xm, stride_wn, stride_sn, stride_ym,
    # quantization parameters
    GROUP_SIZE: tl.constexpr, GLOBAL_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y [M, N] tile per program; the weight tile is dequantized in fp32, rounded to x's dtype
    and fed to tl.dot (fp32 accumulation)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_kb = tl.arange(0, BLOCK_K // 2)
    mask_n = offs_n < N
    if GLOBAL_SCALE:
        gs = tl.load(global_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = k0 + offs_k < K
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :],
                    mask=(offs_m[:, None] < M) & k_ok[None, :], other=0.0)
        # packed bytes [BN, BK/2] -> codes [BN, BK]: (low, high) nibble pairs in K order
        packed = tl.load(w_ptr + offs_n[:, None] * stride_wn + (k0 // 2 + offs_kb)[None, :],
                         mask=mask_n[:, None] & (k0 // 2 + offs_kb < K // 2)[None, :], other=0)
        codes = tl.reshape(tl.join(packed & 0xF, packed >> 4), (BLOCK_N, BLOCK_K))
        # one scale per (row, group) in the tile, decoded once, broadcast over its GROUP_SIZE columns
        offs_g = k0 // GROUP_SIZE + tl.arange(0, BLOCK_K // GROUP_SIZE)
        s = tl.load(scales_ptr + offs_n[:, None] * stride_sn + offs_g[None, :],
                    mask=mask_n[:, None] & (offs_g < K // GROUP_SIZE)[None, :], other=0)
        if GLOBAL_SCALE:  # e4m3 bytes -> fp32 by integer decode (no e4m3 type below sm_89)
            s = e4m3_bytes_to_f16(s).to(tl.float32)
            s = tl.div_rn(s, tl.zeros_like(s) + gs)
        else:
            s = (s.to(tl.int32) << 23).to(tl.float32, bitcast=True)
        v = tl.reshape(_e2m1_to_f32(codes), (BLOCK_N, BLOCK_K // GROUP_SIZE, GROUP_SIZE))
        w = tl.reshape(v * s[:, :, None], (BLOCK_N, BLOCK_K)).to(a.dtype)
        if IEEE:
            acc = tl.dot(a, tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, tl.trans(w), acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    mask = (offs_m[:, None] < M) & mask_n[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def fp4_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor, global_scale: torch.Tensor | None,
               group_size: int, bias: torch.Tensor | None, *, block_m: int, block_n: int, block_k: int,
               num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """x [M, K] fp16/bf16/fp32; w_packed uint8 [N, K/2]; scales [N, K/group_size]
    (float8_e4m3fn with global_scale fp32 [1], or uint8 e8m0 with None) -> y [M, N] x.dtype."""
    if block_k % group_size:
        raise ValueError(f"block_k: expected a multiple of group_size {group_size}, found {block_k}")
    m, k = x.shape
    n = w_packed.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    launch(fp4_matmul_kernel, grid,
           (x, w_packed, scales.view(torch.uint8), global_scale, bias, y, m, n, k, x.stride(0), w_packed.stride(0),
            scales.stride(0), y.stride(0)),
           GROUP_SIZE=group_size, GLOBAL_SCALE=global_scale is not None, HAS_BIAS=bias is not None,
           IEEE=x.dtype == torch.float32, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
           num_warps=num_warps, num_stages=num_stages)
    return y
