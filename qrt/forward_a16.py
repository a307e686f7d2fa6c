"""Weight-only forward (WxA16): y = x @ dequant(W).T + b.

Reference path for now: dequantize, then F.linear. The Triton/CPU-packed dispatch
replaces the body; the signature stays.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_a16(layer):
    """Runtime tensors built once from the checkpoint buffers (stored as layer._runtime).
    The reference path needs none."""
    return None


def linear_a16(layer, x: torch.Tensor) -> torch.Tensor:
    """layer: QuantLinear with scheme.activations None; x [..., in] -> [..., out]."""
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return F.linear(x, layer.dequantize_weight(x.dtype), bias)
