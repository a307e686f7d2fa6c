"""W8A8 (8-bit per-channel weights, dynamic or static symmetric int8 tokens) on the CPU
through torch._weight_int8pack_mm, torch's fast W8A16 kernel for bfloat16 activations.

The tokens are quantized exactly as in the other backends (qrt.runtime.int8_act.quant_rows);
their int8 values are cast to bfloat16, which holds every integer of magnitude <= 256
exactly, so each product q_x * q_w is an exact integer and the kernel accumulates them in
fp32. The kernel's weight scales are ones (exact) and its output is bfloat16, so the one
rounding against the int32 dot of torch._int_mm is that output: 2^-8 relative (plus fp32
accumulation, exact while partial sums stay below 2^24, i.e. always for K <= 1040). The
fp32 epilogue is the kernels': dot * sw[n] * sx[token] (+ bias).

Why: at M = 1 this kernel reads the weight once in a tight loop; tests/runtime/
test_int8_pack_a8.py checks it against torch._int_mm and float64 math.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_K_MULTIPLE = 16  # _weight_int8pack_mm needs K % 16 == 0 (qrt.runtime.cpu_packed)


@dataclass(frozen=True)
class Int8PackA8:
    """w int8 [N, K_pad] (zero-padded columns); ones bf16 [N]; w_scales fp32 [N]."""

    w: torch.Tensor
    ones: torch.Tensor
    w_scales: torch.Tensor
    in_features: int

    @classmethod
    def build(cls, q: torch.Tensor, scales: torch.Tensor) -> "Int8PackA8":
        """q int8 [N, K] (group order), scales fp32 [N, 1]."""
        n, k = q.shape
        qp = F.pad(q, (0, -(-k // _K_MULTIPLE) * _K_MULTIPLE - k)).contiguous()
        return cls(qp, torch.ones(n, dtype=torch.bfloat16, device=q.device),
                   scales.reshape(-1).float().contiguous(), k)

    def dots(self, xq: torch.Tensor) -> torch.Tensor:
        """int8 tokens [M, K] -> their dots with every weight row, fp32 [M, N] (rounded to bf16)."""
        xb = xq.to(torch.bfloat16)
        if self.w.shape[1] != self.in_features:
            xb = F.pad(xb, (0, self.w.shape[1] - self.in_features))
        return torch._weight_int8pack_mm(xb, self.w, self.ones).float()

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None, input_scale) -> torch.Tensor:
        from qrt.runtime.int8_act import quant_rows
        xq, sx, _ = quant_rows(x, True, input_scale)
        y = self.dots(xq).mul_(self.w_scales).mul_(sx[:, None])
        if bias is not None:
            y = y.add_(bias.float())
        return y.to(x.dtype)
