"""Every public kernel entry point as a torch custom op (namespace qrt), so torch.compile
and meta tensors see output shapes without running (or having) a GPU. The fakes run the
same argument checks as the real ops, so bad shapes fail at trace time.

  torch.ops.qrt.dequant_matmul(x, w_packed, scales, zeros, bits, group_size, bias) -> y [M, N]
  torch.ops.qrt.dequant_weight(w_packed, scales, zeros, bits, group_size, k, dtype) -> W [N, k]
  torch.ops.qrt.quant_per_token(x, symmetric) -> (q int8 [M, K], scale fp32 [M], zp int32 [M])
  torch.ops.qrt.quant_static(x, input_scale) -> (q int8 [M, K], scale fp32 [M])
  torch.ops.qrt.fp8_linear(x, w, w_scale, bias, act_fp8) -> y [M, N]
  torch.ops.qrt.fp4_matmul(x, w_packed, scales, global_scale, group_size, bias) -> y [M, N]
  torch.ops.qrt.a8_linear(x, w, w_scales, w_bits, group_size, bias, symmetric, input_scale,
                          w_sums) -> y [M, N]

Kernel choice lives in dispatch.py; importing this module imports no triton.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import dispatch
from .arg_checks import (ACT_DTYPES, check_a8_linear_args, check_act_input, check_dequant_matmul_args,
                         check_fp4_matmul_args, check_fp8_linear_args, check_packed_weight_args)
from .reference import dequant_weight as _dequant_weight_ref


@torch.library.custom_op("qrt::dequant_matmul", mutates_args=())
def dequant_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                   zeros: Optional[torch.Tensor], bits: int, group_size: int,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias); see qrt_kernels.dispatch.dequant_matmul."""
    return dispatch.dequant_matmul(x, w_packed, scales, zeros, bits, group_size, bias)


@dequant_matmul.register_fake
def _dequant_matmul_fake(x, w_packed, scales, zeros, bits, group_size, bias=None):
    m, n, _ = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    return x.new_empty((m, n))


@torch.library.custom_op("qrt::dequant_weight", mutates_args=())
def dequant_weight(w_packed: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                   bits: int, group_size: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """W [N, k] = (q - zeros) * scales in dtype (Triton where it runs, else the twin)."""
    if dispatch.triton_runs_on(w_packed.device):
        from .dequant import dequant_weight as _dequant_weight_triton  # needs triton
        return _dequant_weight_triton(w_packed, scales, zeros, bits, group_size, k, dtype=dtype)
    check_packed_weight_args(w_packed, scales, zeros, bits, group_size, k)
    return _dequant_weight_ref(w_packed, scales, zeros, bits, group_size, k, dtype=dtype)


@dequant_weight.register_fake
def _dequant_weight_fake(w_packed, scales, zeros, bits, group_size, k, dtype):
    n = check_packed_weight_args(w_packed, scales, zeros, bits, group_size, k)
    if dtype not in ACT_DTYPES:
        raise ValueError(f"dtype: expected one of {ACT_DTYPES}, found {dtype}")
    return w_packed.new_empty((n, k), dtype=dtype)


@torch.library.custom_op("qrt::quant_per_token", mutates_args=())
def quant_per_token(x: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-token int8 (dispatch.quant_per_token); zp is zeros when symmetric."""
    q, scale, zp = dispatch.quant_per_token(x, symmetric)
    return q, scale, torch.zeros_like(scale, dtype=torch.int32) if zp is None else zp


@quant_per_token.register_fake
def _quant_per_token_fake(x, symmetric):
    m, k = check_act_input(x)
    return (x.new_empty((m, k), dtype=torch.int8), x.new_empty(m, dtype=torch.float32),
            x.new_empty(m, dtype=torch.int32))


@torch.library.custom_op("qrt::quant_static", mutates_args=())
def quant_static(x: torch.Tensor, input_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Static per-tensor int8 (dispatch.quant_static)."""
    return dispatch.quant_static(x, input_scale)


@quant_static.register_fake
def _quant_static_fake(x, input_scale):
    m, k = check_act_input(x)
    if input_scale.numel() != 1:
        raise ValueError(f"input_scale: expected one value, found shape {tuple(input_scale.shape)}")
    return x.new_empty((m, k), dtype=torch.int8), x.new_empty(m, dtype=torch.float32)


@torch.library.custom_op("qrt::a8_linear", mutates_args=())
def a8_linear(x: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, w_bits: int, group_size: int,
              bias: Optional[torch.Tensor], symmetric: bool, input_scale: Optional[torch.Tensor],
              w_sums: Optional[torch.Tensor]) -> torch.Tensor:
    """y [M, N] = int8-quantized x [M, K] @ W^T (+ bias) in x.dtype (dispatch.a8_linear)."""
    return dispatch.a8_linear(x, w, w_scales, w_bits=w_bits, group_size=group_size, bias=bias,
                              symmetric=symmetric, input_scale=input_scale, w_sums=w_sums)


@a8_linear.register_fake
def _a8_linear_fake(x, w, w_scales, w_bits, group_size, bias, symmetric, input_scale, w_sums):
    m, n = check_a8_linear_args(x, w, w_scales, w_bits, group_size, bias, symmetric, input_scale, w_sums)
    return x.new_empty((m, n))


# ---- FP8 / FP4 weights ----
@torch.library.custom_op("qrt::fp8_linear", mutates_args=())
def fp8_linear(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: Optional[torch.Tensor],
               act_fp8: bool) -> torch.Tensor:
    """y [M, N] = x [M, K] @ (W_fp8 [N, K] * w_scale [N]).T (+ bias); act_fp8: dynamic
    per-token FP8 activations (dispatch.fp8_linear)."""
    return dispatch.fp8_linear(x, w, w_scale, bias, act_fp8)


@fp8_linear.register_fake
def _fp8_linear_fake(x, w, w_scale, bias, act_fp8):
    m, n = check_fp8_linear_args(x, w, w_scale, bias)
    return x.new_empty((m, n))


@torch.library.custom_op("qrt::fp4_matmul", mutates_args=())
def fp4_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
               global_scale: Optional[torch.Tensor], group_size: int,
               bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(FP4 W).T (+ bias); NVFP4 with global_scale, else MXFP4
    (dispatch.fp4_matmul)."""
    return dispatch.fp4_matmul(x, w_packed, scales, global_scale, group_size, bias)


@fp4_matmul.register_fake
def _fp4_matmul_fake(x, w_packed, scales, global_scale, group_size, bias=None):
    m, n = check_fp4_matmul_args(x, w_packed, scales, global_scale, group_size, bias)
    return x.new_empty((m, n))
