"""WxA16 on the CPU through torch's own packed kernels, converted once at finalize.

  <= 4-bit, groups of a multiple of 32 (or per-channel): torch._weight_int4pack_mm_for_cpu
  8-bit, one group per row (per-channel / per-tensor):  torch._weight_int8pack_mm

Both kernels are fast only with bfloat16 activations on this kind of CPU (measured on the
2-core AMD EPYC dev box, 4096x4096, M=1: bf16 ~0.5 ms, fp32 10-15 ms, fp16 50-90 ms, fp32
F.linear ~4 ms), and they take scales in the activation dtype. So x, the scales and the
output go through bf16 (relative rounding 2^-8); y is returned in x.dtype.

torch's int4 convention is w = (u - 8) * scale + zero with u the unsigned nibble and a float
zero. Ours is w = (q - z) * s with q = u - 8, i.e. zero = -z * s. For 2/3-bit weights
q - z fits in a nibble, so the zero is folded into the integers and the float zero is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qrt.numerics.quant import expand_groups

INT4PACK_GROUPS = (256, 128, 64, 32)  # the group sizes torch's CPU int4 kernel accepts
_INT4PACK_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu needs N % 16 == 0
_INT8PACK_K_MULTIPLE = 16  # _weight_int8pack_mm crashes (segfault) for K % 16 != 0


def _round_up(v: int, multiple: int) -> int:
    return -(-v // multiple) * multiple


def int4pack_group(group_size: int, k: int) -> int | None:
    """The int4pack group that reproduces our groups: the largest supported size dividing
    group_size (each int4pack group then lies inside one of ours), or for one group per row
    (group_size >= k) the one that pads K least. None if no supported size fits."""
    if group_size >= k:
        return min(INT4PACK_GROUPS, key=lambda g: (_round_up(k, g), -g))
    return next((g for g in INT4PACK_GROUPS if group_size % g == 0), None)


def _expand_to_blocks(t: torch.Tensor, group_size: int, k: int, block: int) -> torch.Tensor:
    """[N, n_groups] per-group values -> [N, ceil(k/block)] per-block values (a block's
    first column decides its group; blocks never straddle groups, see int4pack_group)."""
    first_cols = torch.arange(0, k, block, device=t.device)
    return t.index_select(1, (first_cols // group_size).clamp_(max=t.shape[1] - 1))


@dataclass(frozen=True)
class Int4PackCPU:
    """packed uint8 [N_pad, K_pad/2]; scales_and_zeros bf16 [K_pad/group, N_pad, 2]."""

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    group_size: int
    in_features: int
    out_features: int

    @classmethod
    def build(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int,
              group_size: int) -> "Int4PackCPU":
        """q int8 [N, K] (columns in group order), scale [N, n_groups], zero int8 or None."""
        n, k = q.shape
        g = int4pack_group(group_size, k)
        s_blk = _expand_to_blocks(scale.float(), group_size, k, g)
        u = q + 8  # the unsigned nibble, still int8 (1 byte a value until the final int32 copy)
        zero_blk = torch.zeros_like(s_blk)
        if zero is not None:
            if bits < 4:  # q - z in [-7, 7]: exact in a nibble, no float zero needed
                u = u - expand_groups(zero.to(torch.int8), group_size, k)
            else:
                zero_blk = -_expand_to_blocks(zero.float(), group_size, k, g) * s_blk
        n_pad, k_pad = _round_up(n, _INT4PACK_N_MULTIPLE), _round_up(k, g)
        # padded rows and columns hold q = 0 (nibble 8) with scale 0: they add nothing
        if (n_pad, k_pad) != (n, k):
            u = F.pad(u, (0, k_pad - k, 0, n_pad - n), value=8)
        u = u.to(torch.int32)
        sz = torch.stack([s_blk, zero_blk], dim=-1)
        sz = F.pad(sz, (0, 0, 0, k_pad // g - sz.shape[1], 0, n_pad - n))
        packed = torch._convert_weight_to_int4pack_for_cpu(u, 2)
        return cls(packed, sz.transpose(0, 1).contiguous().to(torch.bfloat16), g, k, n)

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [M, K] -> [M, N] in x.dtype."""
        k_pad = self.scales_and_zeros.shape[0] * self.group_size
        xb = x.to(torch.bfloat16)
        if k_pad != self.in_features:  # (a zero-width pad still copies)
            xb = F.pad(xb, (0, k_pad - self.in_features))
        y = torch._weight_int4pack_mm_for_cpu(xb, self.packed, self.group_size, self.scales_and_zeros)
        if y.shape[1] != self.out_features:
            y = y[:, :self.out_features]
        y = y.to(x.dtype)
        return y if bias is None else y + bias.to(x.dtype)


@dataclass(frozen=True)
class Int8PackCPU:
    """q int8 [N, K_pad]; scales bf16 [N]; zero_scales fp32 [N] = z * s, or None."""

    q: torch.Tensor
    scales: torch.Tensor
    zero_scales: torch.Tensor | None
    in_features: int

    @classmethod
    def build(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> "Int8PackCPU":
        """q int8 [N, K]; scale [N, 1]; zero int8 [N, 1] or None."""
        k = q.shape[1]
        qp = F.pad(q, (0, _round_up(k, _INT8PACK_K_MULTIPLE) - k)).contiguous()
        s = scale.reshape(-1).to(torch.bfloat16).contiguous()
        zs = None if zero is None else (zero.reshape(-1).float() * s.float()).contiguous()
        return cls(qp, s, zs, k)

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [M, K] -> [M, N] in x.dtype. Asymmetric: sum_k x_k (q - z) s = s * (x @ q) - (z s) sum_k x_k."""
        xb = x.to(torch.bfloat16)
        if self.q.shape[1] != self.in_features:
            xb = F.pad(xb, (0, self.q.shape[1] - self.in_features))
        y = torch._weight_int8pack_mm(xb, self.q, self.scales)
        if self.zero_scales is not None:
            y = y.float() - xb.float().sum(dim=1, keepdim=True) * self.zero_scales
        y = y.to(x.dtype)
        return y if bias is None else y + bias.to(x.dtype)
