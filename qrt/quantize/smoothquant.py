"""SmoothQuant (Xiao et al., 2022): move activation outliers into the weights before W8A8.

Per input channel j of the Linears fed by one smooth module (a norm, or a Linear):
  a_j = max_t x_tj - min_t x_tj          dynamic range of the calibration activations
  w_j = 2 max_{balance, o} |W_oj|         dynamic range of the balance weights' column j
  s_j = a_j^alpha / w_j^(1 - alpha)       (s_j = a_j where w_j = 0), clamped to >= 1e-5
then x / s (folded into the smooth module) and W diag(s) (folded into the balance weights):
the fp model is unchanged, and per-token int8 activations see flatter channels. The ranges
(max - min rather than max |x|) and the default alpha 0.5 are llmcompressor's
SmoothQuantModifier's, so the two give the same factors on the same activations.

search: instead of one alpha everywhere, each mapping of each block takes the alpha of a
grid with the least error of its parent module's output (self_attn, mlp, or the balance
Linear itself) on the first calibration windows, the balance Linears replaced by their
quantized layers (round to nearest, the scheme's own activation quantizer, reference math):
  L(alpha) = || parent(x; Q(s(alpha))) - parent(x; W) ||^2 / numel
the per-layer alpha tuning of Intel Neural Compressor's SmoothQuant ("auto" alpha), with
AWQ's block-output loss (qrt.quantize.awq). Alpha 0 and 1 are in the grid, so a mapping
that smoothing only hurts can still get the least harmful factors.

Runs inside the sequential driver (qrt.quantize.gptq_model): `start` hooks a block before
its calibration pass, `fold` computes s from what the pass saw and folds it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qrt.formats.targets import set_submodule
from qrt.quantize.mappings import (BlockTransform, ScaleMapping, block_mappings, cache_call, fold_scales, output_mse,
                                   run_calls)
from qrt.runtime.linear import QuantLinear

MIN_SCALE = 1e-5  # llmcompressor's MINIMUM_SMOOTHING_SCALE


@dataclass(frozen=True)
class SmoothQuantConfig:
    """alpha: migration strength in [0, 1] (0.5: the paper's and llmcompressor's default).
    mappings: "norms" (norm -> q/k/v, norm -> gate/up: llmcompressor's default) or "all"
    (also v -> o and up -> down). search: pick alpha per mapping and block from
    grid = (0, 1/(grid-1), ..., 1) by the parent's output error on the first loss_windows
    calibration windows (module docstring); alpha is then unused."""

    alpha: float = 0.5
    mappings: str = "norms"
    search: bool = False
    grid: int = 11
    loss_windows: int = 8

    def __post_init__(self):
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"SmoothQuant alpha must be in [0, 1], found {self.alpha!r}")
        if self.mappings not in ("norms", "all"):
            raise ValueError(f"SmoothQuant mappings must be 'norms' or 'all', found {self.mappings!r}")
        if not isinstance(self.search, bool):
            raise ValueError(f"SmoothQuant search must be a bool, found {self.search!r}")
        for k in ("grid", "loss_windows"):
            v = getattr(self, k)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= (2 if k == "grid" else 1)):
                raise ValueError(f"SmoothQuant {k} must be an int >= {2 if k == 'grid' else 1}, found {v!r}")

    def alphas(self) -> list[float]:
        return [i / (self.grid - 1) for i in range(self.grid)]


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
        self._calls: dict[ScaleMapping, list] = {}
        self.chosen: list[dict[str, float]] = []  # with search: per block, {smooth module: alpha}

    def start(self, block: nn.Module, grams=None) -> None:
        """Hook the first balance Linear of every mapping: its input is the smooth output.
        grams (the driver's X^T X, see AWQ.start) is not needed here."""
        self.stop()
        self._mappings = block_mappings(self.model, block, self.name, norms_only=self.config.mappings == "norms")
        self._ranges = {m: ChannelRange() for m in self._mappings}
        for m, rng in self._ranges.items():
            hook = (lambda r: lambda mod, args: r.add(args[0]))(rng)
            self._handles.append(block.get_submodule(m.balance[0]).register_forward_pre_hook(hook))
        self._calls = {m: [] for m in self._mappings} if self.config.search else {}
        limit = self.config.loss_windows
        for m, calls in self._calls.items():
            self._handles.append(block.get_submodule(m.parent).register_forward_pre_hook(
                (lambda c: lambda mod, args, kwargs: cache_call(c, args, kwargs, limit))(calls), with_kwargs=True))

    @torch.no_grad()
    def fold(self, block: nn.Module, schemes: dict) -> dict[str, torch.Tensor]:
        """Fold the factors into the block. -> {balance name: s}: the inputs of each balance
        Linear are now x / s (the driver rescales its Hessians to match)."""
        self.stop()
        scaled, chosen = {}, {}
        for m, rng in self._ranges.items():
            alpha = self.config.alpha
            if self.config.search and any(b in schemes for b in m.balance):
                alpha = self.best_alpha(block, m, rng.range(), schemes)
                chosen[m.smooth] = alpha
            s = smoothing_factors(rng.range(), [block.get_submodule(b) for b in m.balance], alpha)
            fold_scales(block, m, s, self.norm_offset)
            scaled.update({b: s for b in m.balance})
        if self.config.search:
            self.chosen.append(chosen)
        self._ranges, self._calls = {}, {}
        return scaled

    def best_alpha(self, block: nn.Module, m: ScaleMapping, act_range: torch.Tensor, schemes: dict) -> float:
        """The grid alpha with the least parent output error (module docstring); the block
        is left as it was."""
        calls = self._calls[m]
        balance = [block.get_submodule(b) for b in m.balance]
        reference = run_calls(block.get_submodule(m.parent), calls)
        best, best_loss = None, float("inf")
        for alpha in self.config.alphas():
            s = smoothing_factors(act_range, balance, alpha)
            swapped = []
            try:
                for name, lin in zip(m.balance, balance):
                    if schemes.get(name) is not None:
                        set_submodule(block, name, _smoothed_quantized(lin, s, schemes[name]))
                        swapped.append((name, lin))
                loss = output_mse(reference, run_calls(block.get_submodule(m.parent), calls))
            finally:
                for name, lin in swapped:
                    set_submodule(block, name, lin)
            if loss < best_loss:
                best, best_loss = alpha, loss
        if best is None:
            raise ValueError(f"SmoothQuant search: no finite output error for {m.smooth} -> {m.balance} "
                             "(NaN/Inf in the block's outputs on the calibration data)")
        return best


def _smoothed_quantized(linear: nn.Linear, s: torch.Tensor, scheme) -> QuantLinear:
    """The quantized layer of linear with s folded in: x -> Q(W diag s)(x / s), the scheme's
    activation quantizer included (reference math, the "dense" backend)."""
    w = linear.weight.detach()
    scaled = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    scaled.weight = nn.Parameter((w.float() * s.to(w.device)[None, :]).to(w.dtype), requires_grad=False)
    scaled.bias = linear.bias
    layer = QuantLinear.from_linear(scaled, scheme)
    layer.finalize(backend="dense")
    inv = (1.0 / s).to(w.device)
    layer.register_forward_pre_hook(lambda mod, args: ((args[0] * inv).to(args[0].dtype), *args[1:]))
    return layer
