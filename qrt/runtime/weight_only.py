"""Weight-only forward (WxA16): y = x @ dequant(W).T + b.

Backends (qrt.runtime.backends picks one per layer once, at QuantLinear.finalize; None = the
first usable one for the buffers' device, in this order):
  triton    CUDA (and meta: shapes only): torch.ops.qrt.dequant_matmul on the checkpoint's
            packed weight as is; 3-bit weights widened to 4-bit once (same integers).
  int4pack  CPU, <= 4-bit with groups of a multiple of 32 or per-channel (qrt.runtime.cpu_packed).
  int8pack  CPU, 8-bit per-channel / per-tensor (qrt.runtime.cpu_packed).
  dense     everything else: the dequantized weight, cached in the layer's dtype.
Act-order (weight_g_idx): columns are sorted into group order once (qrt.numerics.act_order) and each
call gathers x's columns to match, so no kernel ever gathers inside its K loop.

Why the dense fallback caches: on the CPU, dequantizing a 4096x4096 weight per call took
~360 ms against ~4 ms for the fp32 F.linear itself, so recomputing would make the layer
~100x slower than unquantized. The cache costs exactly the unquantized layer's memory, and
only layers outside the packed kernels get it: 8-bit group-wise and groups not a multiple
of 32 on the CPU, irregular g_idx groups (never written by GPTQ / llm-compressor), and
devices with neither Triton nor torch's packed kernels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import qrt_kernels.ops  # noqa: F401  (registers torch.ops.qrt.*; imports no triton)
from qrt.numerics.act_order import group_order
from qrt.numerics.packing import pack_int32, packed_words, unpack_int32
from qrt.runtime.cpu_packed import Int4PackCPU, Int8PackCPU, int4pack_group


@dataclass(frozen=True)
class TritonA16:
    """Arguments of torch.ops.qrt.dequant_matmul: w_packed int32 [N, K*bits/32] (group
    order), scales [N, n_groups], zeros int8 [N, n_groups] or None."""

    w_packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    bits: int
    group_size: int

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.qrt.dequant_matmul(x, self.w_packed, self.scales, self.zeros,
                                            self.bits, self.group_size, bias)


@dataclass(frozen=True)
class DenseA16:
    """The dequantized weight [N, K] in the layer's dtype (original column order)."""

    weight: torch.Tensor

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


# -- the backends: usable(layer, device) and build(layer) -> (kernel, col_perm) ----------------
# (qrt.runtime.backends lists them in order of preference and picks one per layer)
def triton_interpreted() -> bool:
    """Triton kernels run on the CPU under TRITON_INTERPRET=1 (tests only, never by default)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _regular_groups(layer) -> bool:
    return group_order(layer.weight_g_idx, layer.in_features, layer.group_size)[1]


def triton_usable(layer, device: torch.device) -> bool:
    return _regular_groups(layer) and (device.type in ("cuda", "meta") or
                                       device.type == "cpu" and triton_interpreted())


def int4pack_usable(layer, device: torch.device) -> bool:
    return device.type == "cpu" and layer.scheme.bits <= 4 and _regular_groups(layer) and \
        int4pack_group(layer.group_size, layer.in_features) is not None


def int8pack_usable(layer, device: torch.device) -> bool:
    return device.type == "cpu" and layer.scheme.bits == 8 and \
        layer.scheme.num_groups(layer.in_features) == 1 and _regular_groups(layer)


def dense_usable(layer, device: torch.device) -> bool:
    return True


def _col_perm(layer) -> torch.Tensor | None:
    return group_order(layer.weight_g_idx, layer.in_features, layer.group_size)[0]


def _grouped_q(layer, col_perm: torch.Tensor | None) -> torch.Tensor:
    """int8 q [N, K] with columns in group order."""
    q = unpack_int32(layer.weight_packed, layer.scheme.bits, layer.in_features)
    return q if col_perm is None else q[:, col_perm].contiguous()


def _triton_weight(layer, col_perm: torch.Tensor | None) -> TritonA16:
    bits, scale, zero = layer.scheme.bits, *layer.qparams()
    kernel_bits = 4 if bits == 3 else bits  # the kernels take 2/4/8; 3-bit q fits in 4
    w = layer.weight_packed
    if layer.weight_packed.device.type == "meta":
        w = torch.empty(layer.out_features, packed_words(layer.in_features, kernel_bits),
                        dtype=torch.int32, device="meta")
    elif col_perm is not None or kernel_bits != bits:
        w = pack_int32(_grouped_q(layer, col_perm), kernel_bits)
    zero = None if zero is None else zero.to(torch.int8).contiguous()
    return TritonA16(w, scale.contiguous(), zero, kernel_bits, layer.group_size)


def build_triton(layer) -> tuple[TritonA16, torch.Tensor | None]:
    col_perm = _col_perm(layer)
    return _triton_weight(layer, col_perm), col_perm


def build_int4pack(layer) -> tuple[Int4PackCPU, torch.Tensor | None]:
    col_perm, (scale, zero) = _col_perm(layer), layer.qparams()
    q = _grouped_q(layer, col_perm)
    return Int4PackCPU.build(q, scale, zero, layer.scheme.bits, layer.group_size), col_perm


def build_int8pack(layer) -> tuple[Int8PackCPU, torch.Tensor | None]:
    col_perm, (scale, zero) = _col_perm(layer), layer.qparams()
    return Int8PackCPU.build(_grouped_q(layer, col_perm), scale, zero), col_perm


def build_dense(layer) -> tuple[DenseA16, None]:
    return DenseA16(layer.dequantize_weight(layer.dtype)), None


def linear_a16(layer, x: torch.Tensor) -> torch.Tensor:
    """layer: QuantLinear with scheme.activations None; x [..., in] -> [..., out] in x.dtype."""
    if x.shape[-1] != layer.in_features:
        raise ValueError(f"x: expected last dim {layer.in_features} (in_features), found shape {tuple(x.shape)}")
    rt = layer._runtime
    x2 = x.reshape(-1, layer.in_features)
    if rt.col_perm is not None:  # act-order: activations follow the weight's sorted columns
        x2 = x2.index_select(1, rt.col_perm)
    y = rt.kernel.matmul(x2.contiguous(), layer.bias)
    return y.reshape(*x.shape[:-1], layer.out_features)
