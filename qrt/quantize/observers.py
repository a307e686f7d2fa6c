"""Observers: watch activations during calibration and produce a static per-tensor scale.

Symmetric int8, as the "w8a8-static" scheme stores it: scale = max(|lo|, |hi|) / 127 with
lo = min(x, 0), hi = max(x, 0). Names follow the scheme's `activations.observer` field;
the llmcompressor observer each one mirrors is given in its docstring.

  "minmax"         running min / max over every batch seen        (llmcompressor static_minmax)
  "moving_minmax"  exponential moving average of per-batch min/max (llmcompressor minmax)
  "mse"            per batch, the clipped range minimising the quantization error
                   sum |fq(x) - x|^norm over a grid of shrink factors, then moving-averaged
                                                                    (llmcompressor mse)
Non-finite activations raise ValueError: a static scale must not be poisoned silently.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qrt.schemes import OBSERVERS

QMAX = 127.0


@dataclass(frozen=True)
class ObserverConfig:
    """name: one of OBSERVERS. averaging_constant: weight of a new batch in the moving
    averages. grid / maxshrink / norm: MSE search over shrink factors 1 - i/grid for
    i < maxshrink * grid, error exponent `norm` (llmcompressor's defaults)."""

    name: str = "minmax"
    averaging_constant: float = 0.01
    grid: int = 100
    maxshrink: float = 0.2
    norm: float = 2.4

    def __post_init__(self):
        if self.name not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, found {self.name!r}")
        if not 0.0 < self.averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], found {self.averaging_constant}")
        if self.grid < 1 or not 0.0 <= self.maxshrink < 1.0 or self.norm <= 0:
            raise ValueError(f"MSE search needs grid >= 1, 0 <= maxshrink < 1, norm > 0; found "
                             f"grid={self.grid}, maxshrink={self.maxshrink}, norm={self.norm}")


def batch_range(x: torch.Tensor) -> tuple[float, float]:
    """(min(x, 0), max(x, 0)) of one batch as floats; ValueError on empty or non-finite x."""
    if x.numel() == 0:
        raise ValueError("observer got an empty activation tensor")
    xf = x.detach().float()
    if not torch.isfinite(xf).all():
        raise ValueError(f"observer got non-finite activations (shape {tuple(x.shape)}); "
                         "a static scale cannot be calibrated on inf/NaN")
    return min(float(xf.min()), 0.0), max(float(xf.max()), 0.0)


class Observer:
    """Base: update(x) per calibration batch, scale() -> fp32 [1] symmetric int8 scale."""

    def __init__(self, config: ObserverConfig):
        self.config = config
        self.lo: float | None = None
        self.hi: float | None = None
        self.batches = 0

    def batch_lo_hi(self, x: torch.Tensor) -> tuple[float, float]:
        return batch_range(x)

    def merge(self, lo: float, hi: float) -> None:
        raise NotImplementedError

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self.batch_lo_hi(x)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.merge(lo, hi)
        self.batches += 1

    def scale(self) -> torch.Tensor:
        if self.lo is None:
            raise ValueError("observer has seen no activations; nothing to calibrate from")
        return torch.tensor([max(-self.lo, self.hi) / QMAX], dtype=torch.float32)


class MinMaxObserver(Observer):
    """Running extremes over all batches (llmcompressor's static_minmax)."""

    def merge(self, lo, hi):
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)


class MovingMinMaxObserver(Observer):
    """lo <- lo + c * (batch_lo - lo), same for hi (llmcompressor's minmax)."""

    def merge(self, lo, hi):
        c = self.config.averaging_constant
        self.lo += c * (lo - self.lo)
        self.hi += c * (hi - self.hi)


class MSEObserver(MovingMinMaxObserver):
    """Per batch: the shrunken range p * (lo, hi) minimising sum |fq(x) - x|^norm, with
    fq symmetric int8; the chosen ranges are moving-averaged (llmcompressor's mse)."""

    def batch_lo_hi(self, x):
        lo, hi = batch_range(x)
        absmax = max(-lo, hi)
        if absmax == 0.0:
            return lo, hi
        xf = x.detach().float().reshape(-1)
        best_p, best_err = 1.0, float("inf")
        for i in range(max(1, int(self.config.maxshrink * self.config.grid))):
            p = 1.0 - i / self.config.grid
            s = p * absmax / QMAX
            fq = torch.round(xf / s).clamp(-128, 127) * s
            err = float((fq - xf).abs().pow(self.config.norm).sum())
            if err < best_err:
                best_p, best_err = p, err
        return best_p * lo, best_p * hi


_OBSERVER_CLASSES = {"minmax": MinMaxObserver, "moving_minmax": MovingMinMaxObserver, "mse": MSEObserver}


def make_observer(config: "str | ObserverConfig") -> Observer:
    """An observer from its name ("minmax", "moving_minmax", "mse") or a config."""
    if isinstance(config, str):
        config = ObserverConfig(name=config)
    if not isinstance(config, ObserverConfig):
        raise ValueError(f"expected an observer name or ObserverConfig, found {type(config).__name__}")
    return _OBSERVER_CLASSES[config.name](config)
