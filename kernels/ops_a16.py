"""WxA16 entry points as torch custom ops, so torch.compile and meta tensors see their
output shapes without running (or having) a GPU.

  torch.ops.qrt.dequant_matmul(x, w_packed, scales, zeros, bits, group_size, bias) -> y [M, N]
  torch.ops.qrt.dequant_weight(w_packed, scales, zeros, bits, group_size, k, dtype) -> W [N, k]

The fakes run the same argument checks as the real ops, so bad shapes fail at trace time.
"""
from __future__ import annotations

from typing import Optional

import torch

from .arg_checks import ACT_DTYPES, check_dequant_matmul_args, check_packed_weight_args
from .dispatch import dequant_matmul as _dispatch_dequant_matmul
from .dispatch import triton_runs_on
from .reference import dequant_weight as _dequant_weight_ref


@torch.library.custom_op("qrt::dequant_matmul", mutates_args=())
def dequant_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                   zeros: Optional[torch.Tensor], bits: int, group_size: int,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias); see qrt_kernels.dispatch.dequant_matmul."""
    return _dispatch_dequant_matmul(x, w_packed, scales, zeros, bits, group_size, bias)


@dequant_matmul.register_fake
def _dequant_matmul_fake(x, w_packed, scales, zeros, bits, group_size, bias=None):
    m, n, _ = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    return x.new_empty((m, n))


@torch.library.custom_op("qrt::dequant_weight", mutates_args=())
def dequant_weight(w_packed: torch.Tensor, scales: torch.Tensor, zeros: Optional[torch.Tensor],
                   bits: int, group_size: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """W [N, k] = (q - zeros) * scales in dtype (Triton where it runs, else the twin)."""
    if triton_runs_on(w_packed.device):
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
