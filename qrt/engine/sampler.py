"""Sampler: per-request temperature / top-k / top-p / seed over a batch of logits rows.

Every row is sampled on its own with the Gumbel-max trick: argmax(logits / T + G) with G
standard Gumbel noise is an exact sample from softmax(logits / T). The noise of a request's
k-th output token comes from a generator seeded by (request seed, k), so a seeded request
draws the same tokens whatever else shares its batch, and after a preemption (recompute).
Greedy rows (temperature below TEMPERATURE_FLOOR, or top_k 1) are a plain argmax: dividing
by a tiny temperature would overflow float32 to inf and turn the argmax into noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# below this, logits / T exceeds float32's range for logits of order 1e33 * T; vLLM uses 1e-5 too
TEMPERATURE_FLOOR = 1e-5


@dataclass(frozen=True)
class RowParams:
    """Sampling settings of one logits row, plus the index of the token it will produce."""

    temperature: float
    top_p: float
    top_k: int
    seed: int
    step: int

    @property
    def greedy(self) -> bool:
        return self.temperature < TEMPERATURE_FLOOR or self.top_k == 1


def apply_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits [V] (already divided by temperature) -> logits with excluded tokens at -inf.
    top_k <= 0 and top_p >= 1 disable their filter. top-p keeps the smallest set of most
    likely tokens whose probability reaches top_p (always at least one)."""
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # probability of strictly more likely tokens
        drop_sorted = mass_before >= top_p
        drop_sorted[0] = False
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def gumbel_noise(n: int, seed: int, step: int, device) -> torch.Tensor:
    """Standard Gumbel noise [n], a pure function of (seed, step)."""
    gen = torch.Generator(device="cpu").manual_seed(hash((seed, step)) & (2**63 - 1))
    u = torch.rand(n, generator=gen, dtype=torch.float64).clamp_(min=1e-300)
    return (-torch.log(-torch.log(u))).to(device=device, dtype=torch.float32)


def sample_row(logits: torch.Tensor, p: RowParams) -> torch.Tensor:
    """One row of logits [V] -> scores [V] whose argmax is the sampled token."""
    if p.greedy:
        return logits
    scaled = apply_top_k_top_p(logits.float() / p.temperature, p.top_k, p.top_p)
    return scaled + gumbel_noise(scaled.numel(), p.seed, p.step, scaled.device)


def sample(logits: torch.Tensor, rows: list[RowParams]) -> list[int]:
    """logits [R, V] (one row per request that produces a token) -> R token ids."""
    if logits.shape[0] != len(rows):
        raise ValueError(f"sampler: expected {len(rows)} logits rows, found {logits.shape[0]}")
    if all(p.greedy for p in rows):
        return logits.argmax(-1).tolist()
    return [int(sample_row(logits[i], p).argmax()) for i, p in enumerate(rows)]
