"""SmoothQuant (Xiao et al., 2022): move activation outliers into the weights before W8A8.

Per input channel j of the Linears fed by one smooth module (a norm, or a Linear):
  a_j = max_t x_tj - min_t x_tj          dynamic range of the calibration activations
  w_j = 2 max_{balance, o} |W_oj|         dynamic range of the balance weights' column j
  s_j = a_j^alpha / w_j^(1 - alpha)       (s_j = a_j where w_j = 0), clamped to >= 1e-5
then x / s (folded into the smooth module) and W diag(s) (folded into the balance weights):
the fp model is unchanged, and per-token int8 activations see flatter channels. The ranges
(max - min rather than max |x|) and the default alpha 0.5 are llmcompressor's
SmoothQuantModifier's, so the two give the same factors on the same activations.

Runs inside the sequential driver (qrt.quantize.gptq_model): `start` hooks a block before
its calibration pass, `fold` computes s from what the pass saw and folds it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qrt.quantize.mappings import BlockTransform, ScaleMapping, block_mappings, fold_scales

MIN_SCALE = 1e-5  # llmcompressor's MINIMUM_SMOOTHING_SCALE


@dataclass(frozen=True)
class SmoothQuantConfig:
    """alpha: migration strength in [0, 1] (0.5: the paper's and llmcompressor's default).
    mappings: "norms" (norm -> q/k/v, norm -> gate/up: llmcompressor's default) or "all"
    (also v -> o and up -> down)."""

    alpha: float = 0.5
    mappings: str = "norms"

    def __post_init__(self):
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"SmoothQuant alpha must be in [0, 1], found {self.alpha!r}")
        if self.mappings not in ("norms", "all"):
            raise ValueError(f"SmoothQuant mappings must be 'norms' or 'all', found {self.mappings!r}")


class ChannelRange:
    """Running per-channel min and max of x [..., channels] (float32)."""

    def __init__(self):
        self.lo = self.hi = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        lo, hi = x.amin(dim=0), x.amax(dim=0)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def range(self) -> torch.Tensor:
        if self.lo is None:
            raise ValueError("no calibration activations reached this layer; cannot smooth it")
        return self.hi - self.lo


def smoothing_factors(act_range: torch.Tensor, balance: list[nn.Linear], alpha: float) -> torch.Tensor:
    """s [channels] from the activation range [channels] and the balance weights [out, channels]."""
    w_range = 2.0 * torch.stack([b.weight.detach().abs().amax(dim=0).float() for b in balance]).amax(dim=0)
    s = act_range.pow(alpha) / w_range.pow(1.0 - alpha)
    s = torch.where(w_range > 0, s, act_range)
    return s.clamp(min=MIN_SCALE)


class SmoothQuant(BlockTransform):
    """The block transform the sequential driver calls (see module docstring)."""

    name = "smoothquant"

    def __init__(self, model: nn.Module, config: SmoothQuantConfig | None = None):
        super().__init__(model, config or SmoothQuantConfig())
        self._ranges: dict[ScaleMapping, ChannelRange] = {}

    def start(self, block: nn.Module) -> None:
        """Hook the first balance Linear of every mapping: its input is the smooth output."""
        self.stop()
        self._mappings = block_mappings(self.model, block, self.name, norms_only=self.config.mappings == "norms")
        self._ranges = {m: ChannelRange() for m in self._mappings}
        for m, rng in self._ranges.items():
            hook = (lambda r: lambda mod, args: r.add(args[0]))(rng)
            self._handles.append(block.get_submodule(m.balance[0]).register_forward_pre_hook(hook))

    @torch.no_grad()
    def fold(self, block: nn.Module, schemes: dict) -> dict[str, torch.Tensor]:
        """Fold the factors into the block. -> {balance name: s}: the inputs of each balance
        Linear are now x / s (the driver rescales its Hessians to match)."""
        self.stop()
        scaled = {}
        for m, rng in self._ranges.items():
            s = smoothing_factors(rng.range(), [block.get_submodule(b) for b in m.balance], self.config.alpha)
            fold_scales(block, m, s, self.norm_offset)
            scaled.update({b: s for b in m.balance})
        self._ranges = {}
        return scaled
