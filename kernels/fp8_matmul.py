"""FP8 (e4m3) weights: y = x @ (W_fp8 * sw).T (+ bias), per-output-channel weight scales.

Two kernels, launched by dispatch.fp8_linear:
  fp8_quant_rows_kernel  dynamic per-token FP8 activations (W8A8-FP8, llmcompressor's
                         FP8_DYNAMIC): scale = max|x_row| / 448, q = fp8(x / scale).
  fp8_matmul_kernel      tensor-core tiles. ACT_FP8: both operands FP8; NATIVE_FP8 feeds them
                         to tl.dot as FP8 (sm_89+), else both are widened to fp16 first
                         (exact: every e4m3 value is an fp16 value), which any GPU can run.
FP8 tensors travel as their uint8 bytes: Triton below sm_89 has no e4m3 type at all (not
even to load one), so there the bytes are decoded with integer ops (e4m3_bytes_to_f16).
                         Weight-only (not ACT_FP8): W widened to x's dtype (exact for
                         fp16/bf16/fp32). The per-channel scale (and the per-token scale)
                         factor out of the K sum, so they multiply the fp32 tile once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import launch


@triton.jit
def _round_to_e4m3_grid(v):
    """fp32 v (|v| <= 448) rounded to the nearest e4m3 value, ties to even, in fp32 adds:
    with ulp the e4m3 spacing at v (2^(e-3), subnormals 2^-9), C = 1.5 * 2^23 * ulp puts
    v + C where fp32's own spacing is ulp, so the add rounds v and "- C" is exact. The cast
    to fp8 that follows then never rounds (the interpreter's fp8 cast mis-rounds carries
    into the exponent, e.g. 127.97 -> 64; hardware cvt.rn would agree with this anyway)."""
    e = tl.maximum(((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6)
    c = ((e + 147) << 23).to(tl.float32, bitcast=True) * 1.5  # 2^(e - 3 + 23) * 1.5
    return (v + c) - c


@triton.jit
def e4m3_bytes_to_f16(b):
    """uint8 e4m3 bytes -> fp16 values, exactly: the 7 exponent+mantissa bits placed at fp16
    bits 7-13 are the value times 2^-8 (subnormals included); 448 * 2^-8 fits easily."""
    c = b.to(tl.int16)
    bits = ((c & 0x80) << 8) | ((c & 0x7F) << 7)
    return bits.to(tl.float16, bitcast=True) * 256.0


@triton.jit
def _e4m3_grid_to_bytes(r):
    """fp32 r already on the e4m3 grid (|r| <= 448) -> its uint8 e4m3 encoding (the inverse
    of e4m3_bytes_to_f16; exact, no rounding left to do)."""
    h = (r * 0.00390625).to(tl.float16).to(tl.int16, bitcast=True)
    return (((h >> 8) & 0x80) | ((h >> 7) & 0x7F)).to(tl.uint8)


@triton.jit
def fp8_quant_rows_kernel(
    # pointers
    x_ptr, q_ptr, scale_ptr,
    # sizes and strides
    K, stride_xm, stride_qm,
    # meta-parameters
    NATIVE_FP8: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One program per row: absmax pass, then quantize pass (the row is read twice so any K fits)."""
    row = tl.program_id(0)
    offs_k = tl.arange(0, BLOCK_K)
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + row * stride_xm + k0 + offs_k, mask=k0 + offs_k < K, other=0.0)
        amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
    scale = tl.max(amax, axis=0) / 448.0
    # a zero row divides by 1 (q = 0) and keeps scale 0
    safe = tl.where(scale > 0.0, scale, 1.0)
    for k0 in range(0, K, BLOCK_K):
        mask = k0 + offs_k < K
        x = tl.load(x_ptr + row * stride_xm + k0 + offs_k, mask=mask, other=0.0).to(tl.float32)
        # IEEE division (the twin divides too); '/' may lower to an approximate divide
        v = _round_to_e4m3_grid(tl.clamp(tl.div_rn(x, tl.zeros_like(x) + safe), -448.0, 448.0))
        if NATIVE_FP8:
            q = v.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
        else:
            q = _e4m3_grid_to_bytes(v)
        tl.store(q_ptr + row * stride_qm + k0 + offs_k, q, mask=mask)
    tl.store(scale_ptr + row, scale)


@triton.jit
def fp8_matmul_kernel(
    # pointers
    x_ptr, w_ptr, sx_ptr, sw_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K,
    # strides
    stride_xm, stride_wn, stride_ym,
    # quantization parameters
    ACT_FP8: tl.constexpr, NATIVE_FP8: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y [M, N] tile per program: acc = x [BM, K] @ W [BN, K].T in fp32, then * sx * sw + bias."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        # operands: x [BM, BK] and W^T [BK, BN]; past K both load 0
        k_ok = k0 + offs_k < K
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :],
                    mask=(offs_m[:, None] < M) & k_ok[None, :], other=0)
        b = tl.load(w_ptr + offs_n[None, :] * stride_wn + (k0 + offs_k)[:, None],
                    mask=(offs_n[None, :] < N) & k_ok[:, None], other=0)
        # FP8 bytes -> operands: e4m3 for the FP8 MMA, else fp16 (exact) on any GPU
        if NATIVE_FP8:
            b = b.to(tl.float8e4nv, bitcast=True)
        else:
            b = e4m3_bytes_to_f16(b)
        if ACT_FP8:
            if NATIVE_FP8:
                a = a.to(tl.float8e4nv, bitcast=True)
            else:
                a = e4m3_bytes_to_f16(a)
        else:
            b = b.to(a.dtype)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    # epilogue: scales factor out of the K sum (per token, per output channel)
    if ACT_FP8:
        acc = acc * tl.load(sx_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
    acc = acc * tl.load(sw_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def fp8_quant_rows(x: torch.Tensor, native_fp8: bool, block_k: int = 1024,
                   num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (fp16/bf16/fp32, contiguous rows) -> (q float8_e4m3fn [M, K], scale fp32 [M])."""
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty(m, dtype=torch.float32, device=x.device)
    bk = min(block_k, triton.next_power_of_2(max(k, 16)))
    launch(fp8_quant_rows_kernel, (m,), (x, q.view(torch.uint8), scale, k, x.stride(0), q.stride(0)),
           NATIVE_FP8=native_fp8, BLOCK_K=bk, num_warps=num_warps)
    return q, scale


def fp8_matmul(x: torch.Tensor, w: torch.Tensor, sx: torch.Tensor | None, sw: torch.Tensor,
               bias: torch.Tensor | None, out_dtype: torch.dtype, native_fp8: bool, *,
               block_m: int, block_n: int, block_k: int, num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """y [M, N] out_dtype. x [M, K]: float8_e4m3fn with sx fp32 [M] (W8A8-FP8), or
    fp16/bf16/fp32 with sx None (weight-only); w float8_e4m3fn [N, K]; sw fp32 [N].
    native_fp8: e4m3 operands straight into tl.dot (sm_89+), else decoded to fp16."""
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty((m, n), dtype=out_dtype, device=x.device)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    launch(fp8_matmul_kernel, grid,
           (x.view(torch.uint8) if sx is not None else x, w.view(torch.uint8), sx, sw, bias, y, m, n, k,
            x.stride(0), w.stride(0), y.stride(0)),
           ACT_FP8=sx is not None, NATIVE_FP8=native_fp8, HAS_BIAS=bias is not None,
           IEEE=x.dtype == torch.float32, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
           num_warps=num_warps, num_stages=num_stages)
    return y
