"""torch's own weight-only kernels, wrapped as Linear-like modules: the peers qrt is
measured against.

- TorchInt4Linear: `torch._weight_int4pack_mm` (tinygemm, CUDA; what torchao's int4
  weight-only path calls) or `torch._weight_int4pack_mm_for_cpu`. Its dequantization is
  w = (q_u - 8) * scale + zero with q_u in [0, 15]; qrt's symmetric int4 q in [-8, 7]
  maps to q_u = q + 8 and zero = 0, so both compute exactly the same weight.
- TorchInt8Linear: `torch._weight_int8pack_mm` (per-channel int8, CPU).

Both are built from qrt's RTN integers, so a speed ratio compares kernels, not roundings.
"""
from __future__ import annotations

import torch
from torch import nn

from qrt.numerics.quant import QuantizedWeight, dequantize, quantize_weight
from qrt.schemes import resolve_scheme


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).norm() / ref.norm().clamp_min(1e-30))


def _inner_k_tiles(k: int) -> int:
    for tiles in (8, 4, 2):  # the kernel needs K % (16 * innerKTiles) == 0
        if k % (16 * tiles) == 0:
            return tiles
    raise ValueError(f"torch int4 kernel needs in_features % 32 == 0, found {k}")


class TorchInt4Linear(nn.Module):
    """y [..., N] = x [..., K] @ dequant(W).T through torch's int4 weight-only kernel, which
    runs in `dtype` (bfloat16: tinygemm's only type, and the CPU kernel's fast one); x of
    another dtype is cast to it and y cast back."""

    def __init__(self, qw: QuantizedWeight, group_size: int, dtype: torch.dtype,
                 bias: torch.Tensor | None = None):
        super().__init__()
        n, k = qw.q.shape
        if qw.zero is not None or qw.g_idx is not None or k % group_size:
            raise ValueError("TorchInt4Linear takes symmetric int4 weights, no g_idx, "
                             f"in_features divisible by the group size; found zero={qw.zero is not None}, "
                             f"g_idx={qw.g_idx is not None}, in={k}, group={group_size}")
        self.in_features, self.out_features, self.group_size, self.dtype = k, n, group_size, dtype
        scale = qw.scale.to(dtype).t().contiguous()  # [K/G, N]
        self.register_buffer("scales_and_zeros", torch.stack([scale, torch.zeros_like(scale)], -1).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.to(dtype), requires_grad=False)
        q_u = qw.q.to(torch.int32) + 8
        if q_u.device.type == "cpu":
            self.mm = torch._weight_int4pack_mm_for_cpu
            self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q_u, _inner_k_tiles(k)))
        else:
            self.mm = torch._weight_int4pack_mm
            self.register_buffer("packed", self._pack_cuda_checked(q_u, qw, group_size))

    def _pack_cuda_checked(self, q_u: torch.Tensor, qw: QuantizedWeight, group_size: int) -> torch.Tensor:
        """uint8 [N, K/2] two nibbles per byte, then tinygemm's tiled layout. The nibble
        order has changed across torch versions, so each order is tried against the
        dequantized weight on a random probe and the one that matches is kept."""
        probe = torch.randn(3, self.in_features, device=q_u.device, dtype=self.dtype)
        ref = probe.float() @ dequantize(qw.q, qw.scale, None, group_size, dtype=torch.float32).t()
        errs = {}
        for name, hi, lo in (("even_high", q_u[:, ::2], q_u[:, 1::2]), ("odd_high", q_u[:, 1::2], q_u[:, ::2])):
            packed = torch._convert_weight_to_int4pack((hi << 4 | lo).to(torch.uint8).contiguous(),
                                                       _inner_k_tiles(self.in_features))
            errs[name] = _rel_err(self.mm(probe, packed, group_size, self.scales_and_zeros), ref)
            if errs[name] < 2e-2:  # bf16 operands: ~4e-3 expected; a wrong order gives ~1.4
                self.nibble_order = name
                return packed
        raise ValueError(f"torch int4 kernel matched neither nibble order: relative errors {errs}")

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, dtype: torch.dtype = torch.bfloat16):
        """RTN int4 symmetric group quantization (qrt's w4a16 numerics) of a Linear."""
        scheme = resolve_scheme("w4a16").replace(group_size=group_size)
        qw = quantize_weight(linear.weight.detach(), scheme)
        return cls(qw, group_size, dtype, linear.bias.detach() if linear.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).to(self.dtype)
        y = self.mm(x2, self.packed, self.group_size, self.scales_and_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return (y if self.bias is None else y + self.bias).to(x.dtype)


class TorchInt8Linear(nn.Module):
    """y = x @ (q * scale).T through `torch._weight_int8pack_mm` (per-channel int8)."""

    def __init__(self, qw: QuantizedWeight, dtype: torch.dtype):
        super().__init__()
        if qw.zero is not None or qw.scale.shape[1] != 1:
            raise ValueError(f"TorchInt8Linear takes symmetric per-channel int8, found scale {tuple(qw.scale.shape)}")
        self.in_features, self.out_features = qw.q.shape[1], qw.q.shape[0]
        self.register_buffer("q", qw.q.to(torch.int8).contiguous())
        self.register_buffer("scale", qw.scale[:, 0].to(dtype).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), self.q, self.scale)
        return y.reshape(*x.shape[:-1], self.out_features)
