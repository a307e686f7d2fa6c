"""Int8-activation forward (WxA8): per-token (dynamic) or per-tensor (static) int8
activations times integer weights.

Reference path for now: fake-quantize x per token (symmetric absmax / 127), then F.linear
with the dequantized weight. The Triton/int8 GEMM dispatch replaces the body.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_a8(layer):
    """Runtime tensors built once from the checkpoint buffers (stored as layer._runtime).
    The reference path needs none."""
    return None


def linear_a8(layer, x: torch.Tensor) -> torch.Tensor:
    """layer: QuantLinear with scheme.activations set; x [..., in] -> [..., out]."""
    xf = x.float()
    if layer.input_scale is not None:
        sx = layer.input_scale.float()
    else:
        sx = xf.abs().amax(dim=-1, keepdim=True) / 127.0
    xq = torch.round(xf / torch.where(sx > 0, sx, torch.ones_like(sx))).clamp(-128, 127)
    bias = None if layer.bias is None else layer.bias.float()
    y = F.linear(xq * sx, layer.dequantize_weight(torch.float32), bias)
    return y.to(x.dtype)
