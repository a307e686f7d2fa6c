"""The output projection (lm_head) of a quantized model, decoded from a smaller copy.

SmolLM2-135M's tied fp32 lm_head is 49152 x 576 x 4 B = 113 MB: more bytes than all of its
W4 layers together, so at batch 1 on the CPU it dominates a quantized model's decode step.
The embedding (the tied weight) is kept as it is; the head reads a copy:

  "int8"  symmetric int8 per output row (the scale is max|w_row| / 127): 28 MB. The byte
          u = q + 128 = 16 h + l is split into nibbles, so
          q s = (h - 8) * 16s + (l - 8) * s + 8s, and the two halves run through torch's
          int4 CPU kernel (scales 16s and s, zero 8s: exact multiples of the bf16 scale),
          whose outputs are added in fp32. Over 49152 x 576 that took ~5.3 ms against
          ~9 ms for torch._weight_int8pack_mm on the same int8 values (same box, one run).
  "bf16"  the weight rounded to bfloat16, F.linear in bfloat16: 57 MB.
  "model" the module as it is.

Numerics against the fp32 head, per logit n (x the final hidden row, u = 2^-8 the unit
roundoff of bfloat16):
  int8: w_nk = q_nk s_n + e_nk with |e_nk| <= s_n / 2 (rounding to the grid); each half
        rounds x, the scale, its dequantized weight and its output to bf16 (u each) and sums
        in fp32, so with A = s_n sum|x_k| |16 (h_nk - 8)| and B = s_n sum|x_k| l_nk:
        |dy_n| <= s_n/2 * sum|x_k| + (4u + 8u^2 + K 2^-24) * (A + B).
  bf16: |dy_n| <= (3u + K 2^-24) * sum|x_k w_nk| (x, w and the output rounded).
tests/runtime/test_lm_head.py checks these bounds in float64, and that greedy argmax agrees
with the fp32 head on the real SmolLM2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qrt.numerics.quant import quantize_weight
from qrt.runtime.cpu_packed import Int4PackCPU
from qrt.schemes import QuantScheme

HEAD_MODES = ("int8", "bf16", "model", "auto")
HEAD_SCHEME = QuantScheme(bits=8, strategy="channel", group_size=None, symmetric=True)


@dataclass(frozen=True)
class Bf16Head:
    weight: torch.Tensor  # bf16 [vocab, hidden]
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


@dataclass(frozen=True)
class Int8Head:
    """int8 q [N, K] as its high and low nibbles, each an int4 CPU kernel."""

    hi: Int4PackCPU
    lo: Int4PackCPU
    bias: torch.Tensor | None

    @classmethod
    def build(cls, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> "Int8Head":
        """q int8 [N, K] in [-127, 127], scale [N, 1]."""
        u = q.to(torch.int16) + 128
        hi, lo = ((u >> 4) - 8).to(torch.int8), ((u & 15) - 8).to(torch.int8)
        k = q.shape[1]
        s = scale.float()
        eight = torch.full_like(lo[:, :1], -8)  # w = (q - z) * s with z = -8: zero point 8s
        return cls(Int4PackCPU.build(hi, s * 16, None, 4, k), Int4PackCPU.build(lo, s, eight, 4, k), bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        y = self.hi.matmul(x2, None).float() + self.lo.matmul(x2, None).float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)


def auto_head_mode(model: nn.Module, lm_head: nn.Module) -> str:
    """What "auto" picks: "int8" for a model with quantized layers whose lm_head is a plain
    fp32 Linear on the CPU (where it is the largest tensor read per token), else "model".
    Opt-in, not the engine's default: it changes greedy tokens at near-ties against the
    model's own generate, which the served outputs are tested to reproduce."""
    from qrt.runtime.linear import QuantLinear
    quantized = any(isinstance(m, QuantLinear) for m in model.modules())
    plain = type(lm_head) is nn.Linear and lm_head.weight.dtype == torch.float32
    return "int8" if quantized and plain and lm_head.weight.device.type == "cpu" else "model"


def build_head(lm_head: nn.Module, mode: str, model: nn.Module | None = None):
    """x [N, hidden] -> logits [N, vocab] in x.dtype, for mode in HEAD_MODES ("auto" needs
    the model). -> (head, the mode it resolved to)."""
    if mode not in HEAD_MODES:
        raise ValueError(f"lm_head mode: expected one of {HEAD_MODES}, found {mode!r}")
    if mode == "auto":
        mode = auto_head_mode(model, lm_head)
    return _build(lm_head, mode), mode


def _build(lm_head: nn.Module, mode: str):
    if mode == "model":
        return lm_head
    if type(lm_head) is not nn.Linear:
        raise ValueError(f"lm_head mode {mode!r} needs a plain nn.Linear head, found {type(lm_head).__name__}")
    w = lm_head.weight.detach()
    bias = None if lm_head.bias is None else lm_head.bias.detach()
    if mode == "bf16":
        return Bf16Head(w.to(torch.bfloat16).contiguous(), None if bias is None else bias.to(torch.bfloat16))
    if w.device.type != "cpu":
        raise ValueError(f"lm_head mode 'int8' runs torch's CPU int8 kernel; the head is on {w.device.type}")
    qw = quantize_weight(w.float(), HEAD_SCHEME)
    return Int8Head.build(qw.q, qw.scale, bias)
