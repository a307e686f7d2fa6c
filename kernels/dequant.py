"""Dequantize a packed 2/4/8-bit weight into a dense [N, K] matrix: W = (q - z) * s.

Used past the crossover M, where the GEMM is compute-bound: one pass writes W in x.dtype
and cuBLAS does the matmul (dispatch.py). Same layout and math as dequant_matmul.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .arg_checks import ACT_DTYPES, check_packed_weight_args, expect_same_device_contiguous
from .dequant_matmul import _dequant_tile
from .launch import launch


@triton.jit
def dequant_kernel(
    # pointers
    w_ptr, scales_ptr, zeros_ptr, out_ptr,
    # sizes
    N, K,
    # strides
    stride_wn, stride_wk, stride_sn, stride_sg, stride_on, stride_ok,
    # quantization parameters
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr,
    # meta-parameters
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # program (pid_n, pid_k) writes one [BLOCK_N, BLOCK_K] block of W, held as [BLOCK_K, BLOCK_N]
    k0 = tl.program_id(1) * BLOCK_K
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    w = _dequant_tile(w_ptr, scales_ptr, zeros_ptr, k0, offs_n, K, N, stride_wn, stride_wk,
                      stride_sn, stride_sg, BITS, GROUP_SIZE, HAS_ZEROS, BLOCK_K)
    # one rounding, fp32 -> out dtype, as torch's dequantize-then-cast does
    ptrs = out_ptr + offs_n[None, :] * stride_on + offs_k[:, None] * stride_ok
    tl.store(ptrs, w.to(out_ptr.dtype.element_ty), mask=(offs_k[:, None] < K) & (offs_n[None, :] < N))


def dequant_weight(w_packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                   bits: int, group_size: int, k: int, dtype: torch.dtype = torch.float32,
                   block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """-> W [N, k] in dtype; w_packed int32 [N, ceil(k*bits/32)], scales/zeros [N, ceil(k/G)]."""
    n = check_packed_weight_args(w_packed, scales, zeros, bits, group_size, k)
    if dtype not in ACT_DTYPES:
        raise ValueError(f"dtype: expected one of {ACT_DTYPES}, found {dtype}")
    named = [("w_packed", w_packed), ("scales", scales)] + ([("zeros", zeros)] if zeros is not None else [])
    expect_same_device_contiguous(named, w_packed.device)
    out = torch.empty(n, k, device=w_packed.device, dtype=dtype)
    grid = (triton.cdiv(n, block_n), triton.cdiv(k, block_k))
    launch(dequant_kernel, grid, (
        w_packed, scales, zeros, out, n, k,
        w_packed.stride(0), w_packed.stride(1), scales.stride(0), scales.stride(1),
        out.stride(0), out.stride(1)),
        BITS=bits, GROUP_SIZE=group_size, HAS_ZEROS=zeros is not None,
        BLOCK_N=block_n, BLOCK_K=block_k)
    return out
