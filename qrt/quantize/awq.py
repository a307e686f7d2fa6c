"""AWQ (Lin et al., 2023): activation-aware per-channel scales found by grid search.

For each mapping (qrt.quantize.mappings) of a block, with x_j = mean_t |x_tj| over the
calibration tokens reaching the balance Linears and w_j the mean over output rows of
|W_oj| / max |W| of its quantization group (llmcompressor's duo scaling):
  s(r) = x^r / (w^(1-r) + 1e-4)  (r = 0 without duo: s = 1, the identity, is always tried)
  s   /= sqrt(max s * min s)
  L(r) = || parent(x; Q(W diag s) diag(1/s)) - parent(x; W) ||^2 / numel
over the n_grid ratios, where Q is the layer's own round-to-nearest (its scheme, group size
and scale dtype) and parent is the balance layers' common module (self_attn, mlp, or the
Linear itself, whose loss is tr(dW X^T X dW^T), the same sum without the tokens). The best
s is folded: the smooth module's output / s, the balance columns * s; the weights are then
quantized by RTN or GPTQ, so the checkpoint is plain pack-quantized. Grid, scales and loss
follow llmcompressor's AWQModifier, so the two pick the same scales on the same activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from qrt.numerics.quant import fake_quantize
from qrt.quantize.awq_clip import clip_weights
from qrt.quantize.mappings import (BlockTransform, ScaleMapping, block_mappings, cache_call, fold_scales, output_mse,
                                   run_calls)


@dataclass(frozen=True)
class AWQConfig:
    """n_grid: grid points (ratios) per mapping; duo_scaling: weight magnitudes join the
    activation ones (llmcompressor's default); loss_windows: calibration windows whose
    self_attn / mlp outputs enter the grid-search loss (None: all). loss_tokens: a parent
    that acts on each token alone (the MLP: ScaleMapping.token_wise) takes its grid loss on
    this many tokens drawn at random (seed 0) from every calibration window instead (None:
    the loss_windows windows); the same loss on a wider, cheaper sample. Activation means and
    the X^T X of Linear parents always use every window. refine: None tries every grid
    ratio (llmcompressor); k >= 2 tries every k-th ratio and the last one, then those less
    than k steps from the best of them (search_grid): the full grid's pick whenever the loss
    strictly falls then rises along the ratio, for about n_grid / k + 2k evaluations.
    clip: after folding, clamp each quantized balance Linear's weights (q/k excepted, as
    AutoAWQ) per (row, group) to the shrunk max that minimizes that group's output error
    (qrt.quantize.awq_clip); with rounding="rtn"."""

    n_grid: int = 20
    duo_scaling: bool = True
    loss_windows: int | None = None
    loss_tokens: int | None = None
    refine: int | None = None
    clip: bool = False  # AutoAWQ's clipping search after the scales (llmcompressor has none)

    def __post_init__(self):
        if not (isinstance(self.n_grid, int) and self.n_grid >= 2):
            raise ValueError(f"AWQ n_grid must be an int >= 2, found {self.n_grid!r}")
        if not isinstance(self.duo_scaling, bool):
            raise ValueError(f"AWQ duo_scaling must be a bool, found {self.duo_scaling!r}")
        if self.loss_windows is not None and not (isinstance(self.loss_windows, int) and self.loss_windows >= 1):
            raise ValueError(f"AWQ loss_windows must be None or an int >= 1, found {self.loss_windows!r}")
        if self.loss_tokens is not None and not (isinstance(self.loss_tokens, int) and self.loss_tokens >= 1):
            raise ValueError(f"AWQ loss_tokens must be None or an int >= 1, found {self.loss_tokens!r}")
        if self.refine is not None and not (isinstance(self.refine, int) and self.refine >= 2):
            raise ValueError(f"AWQ refine must be None or an int >= 2, found {self.refine!r}")

    def grid(self) -> list[tuple[float, bool]]:
        """(ratio, duo) points, as llmcompressor's _get_grid_search_params."""
        if not self.duo_scaling:
            return [(i / (self.n_grid - 1), False) for i in range(self.n_grid)]
        return [(0.0, False)] + [(i / (self.n_grid - 2), True) for i in range(self.n_grid - 1)]


def search_grid(points: list, loss, refine: int | None):
    """The point of least loss(point) (first on ties, in grid order). refine None: every point.
    Else the ratio points (duo's identity (0, False) is always tried on its own) are tried at
    every refine-th and the last index, then within refine - 1 indices of the best of those."""
    losses = {}

    def key(i):  # non-finite losses never win
        if i not in losses:
            losses[i] = loss(points[i])
        return (losses[i] if math.isfinite(losses[i]) else math.inf, i)

    if refine is None:
        tried = range(len(points))
    else:
        line = [i for i, (_, duo) in enumerate(points) if duo] or list(range(len(points)))
        extra = [i for i in range(len(points)) if i not in line]  # duo's identity point
        b = line.index(min([*line[::refine], line[-1]], key=key))
        tried = extra + line[max(0, b - refine + 1):b + refine]
    best = min(tried, key=key)
    return points[best] if math.isfinite(losses[best]) else None


def weight_means(balance: list[nn.Linear], schemes: list) -> torch.Tensor:
    """w [in]: mean over every balance row of |W| normalized by its quantization group's max."""
    total, rows = 0.0, 0
    for lin, scheme in zip(balance, schemes):
        w = lin.weight.detach().float().abs()
        g = w.shape[1] if scheme is None or scheme.strategy != "group" else scheme.group_size
        if scheme is not None and scheme.strategy == "tensor":
            w = w / (w.amax() + 1e-6)
        else:
            w = w.reshape(-1, g)
            w = (w / (w.amax(dim=1, keepdim=True) + 1e-6)).reshape(lin.weight.shape)
        total = total + w.sum(dim=0, dtype=torch.float64)
        rows += w.shape[0]
    return (total / rows).float()


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, ratio: float, duo: bool) -> torch.Tensor:
    if duo:
        s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
    else:
        s = x_mean.pow(ratio).clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return torch.where(torch.isfinite(s), s, torch.ones_like(s))


class _MappingStats:
    """What one mapping's calibration pass leaves: sum |x| and token count; for a module
    parent, its (args, kwargs) per call (the first loss_windows windows) or, token-wise,
    every token's input row (sampled at fold); for a Linear parent or the clip, the Gram
    matrix X^T X of its inputs unless the driver's Hessians hold it."""

    def __init__(self):
        self.abs_sum, self.count, self.calls, self.rows, self.gram = None, 0, [], [], None

    def add_input(self, x: torch.Tensor, gram: bool) -> None:
        x2 = x.detach().reshape(-1, x.shape[-1]).float()
        s = x2.abs().sum(dim=0)
        self.abs_sum = s if self.abs_sum is None else self.abs_sum + s
        self.count += x2.shape[0]
        if gram:
            g = x2.T @ x2
            self.gram = g if self.gram is None else self.gram + g

    def add_rows(self, name: str, args: tuple, kwargs: dict) -> None:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise ValueError(f"AWQ loss_tokens: {name} is called with {len(args)} positional and {sorted(kwargs)} "
                             "keyword arguments; a token-wise parent takes one hidden-states tensor")
        self.rows.append(args[0].detach().reshape(-1, args[0].shape[-1]))

    def token_calls(self, n: int, chunk: int = 8192) -> list:
        """n rows drawn without replacement (seed 0, in token order) as parent calls [1, t, d]."""
        rows = torch.cat(self.rows)
        self.rows = []
        idx = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(0))[:n].sort().values
        sample = rows[idx.to(rows.device)]
        return [((sample[i:i + chunk][None],), {}) for i in range(0, sample.shape[0], chunk)]


class AWQ(BlockTransform):
    """The block transform the sequential driver calls: `start` hooks a block before its
    calibration pass, `fold` runs the grid searches and folds the best scales."""

    name = "awq"

    def __init__(self, model: nn.Module, config: AWQConfig | None = None):
        super().__init__(model, config or AWQConfig())
        self._stats: dict[ScaleMapping, _MappingStats] = {}
        self._grams = None

    def start(self, block: nn.Module, grams=None) -> None:
        """grams: None, or name -> X^T X of a quantized Linear's inputs after the pass (the
        driver's GPTQ Hessians, for every Linear in fold's schemes), which AWQ then reads
        instead of keeping its own."""
        self.stop()
        self._grams = grams
        self._stats = {m: _MappingStats() for m in block_mappings(self.model, block, self.name)}
        for m, st in self._stats.items():
            linear_parent = isinstance(block.get_submodule(m.parent), nn.Linear)
            gram = (linear_parent or self.config.clip) and grams is None
            self._handles.append(block.get_submodule(m.balance[0]).register_forward_pre_hook(
                (lambda st, g: lambda mod, args: st.add_input(args[0], g))(st, gram)))
            if linear_parent:
                continue
            if m.token_wise and self.config.loss_tokens is not None:
                hook = (lambda st, p: lambda mod, args, kwargs: st.add_rows(p, args, kwargs))(st, m.parent)
            else:
                hook = (lambda c, n: lambda mod, args, kwargs: cache_call(c, args, kwargs, n))(
                    st.calls, self.config.loss_windows)
            self._handles.append(block.get_submodule(m.parent).register_forward_pre_hook(hook, with_kwargs=True))

    def gram(self, m: ScaleMapping, st: _MappingStats, schemes: dict) -> torch.Tensor:
        """X^T X of the mapping's balance inputs (they all read the same tensor)."""
        return st.gram if st.gram is not None else self._grams(next(b for b in m.balance if b in schemes))

    @torch.no_grad()
    def fold(self, block: nn.Module, schemes: dict) -> dict[str, torch.Tensor]:
        """Grid-search and fold every mapping of the block, in order. schemes: {balance name
        (relative to the block): the layer's QuantScheme} for the Linears that get quantized.
        -> {balance name: s}: their inputs are now x / s."""
        self.stop()
        scaled, grams = {}, {}
        for m, st in self._stats.items():
            if not any(b in schemes for b in m.balance):
                continue  # nothing in this mapping is quantized
            s = self.best_scales(block, m, st, schemes)
            fold_scales(block, m, s, self.norm_offset)
            scaled.update({b: s for b in m.balance})
            if self.config.clip:  # the balance inputs are now x / s: X^T X -> S^-1 X^T X S^-1
                g = self.gram(m, st, schemes)
                grams.update({b: g / (s[:, None] * s[None, :]) for b in m.balance})
        self._stats = {}
        for b, gram in grams.items():  # AutoAWQ clips after every scale is applied
            if schemes.get(b) is not None and not b.rsplit(".", 1)[-1].startswith(("q_", "k_")):
                lin = block.get_submodule(b)
                lin.weight.copy_(clip_weights(lin.weight, gram, schemes[b]).to(lin.weight.dtype))
        return scaled

    def best_scales(self, block: nn.Module, m: ScaleMapping, st: _MappingStats, schemes: dict) -> torch.Tensor:
        """The grid point with the least loss (module docstring); the weights are restored."""
        if st.count == 0:
            raise ValueError(f"AWQ: no calibration activations reached {m.balance[0]}")
        balance = [block.get_submodule(b) for b in m.balance]
        layer_schemes = [schemes.get(b) for b in m.balance]
        x_mean = st.abs_sum / st.count
        w_mean = weight_means(balance, layer_schemes) if self.config.duo_scaling else None
        orig = [b.weight.detach().clone() for b in balance]
        parent = block.get_submodule(m.parent)
        linear_parent = isinstance(parent, nn.Linear)
        if st.rows:
            st.calls = st.token_calls(self.config.loss_tokens)
        gram = self.gram(m, st, schemes) if linear_parent else None
        reference = None if linear_parent else run_calls(parent, st.calls)

        def loss(point):
            s = candidate_scales(x_mean, w_mean, *point)
            if linear_parent:  # the loss from X^T X
                dw = _scaled_fake_quant(orig[0], s, layer_schemes[0]) - orig[0].float()
                return ((dw @ gram) * dw).sum().item() / (st.count * dw.shape[0])
            for lin, w0, scheme in zip(balance, orig, layer_schemes):
                lin.weight.copy_(_scaled_fake_quant(w0, s, scheme).to(w0.dtype))
            return output_mse(reference, run_calls(parent, st.calls))
        try:
            best = search_grid(self.config.grid(), loss, self.config.refine)
        finally:
            for lin, w0 in zip(balance, orig):
                lin.weight.copy_(w0)
        if best is None:
            raise ValueError(f"AWQ: no finite grid-search loss for {m.smooth} -> {m.balance} "
                             "(NaN/Inf in the block's outputs on the calibration data)")
        return candidate_scales(x_mean, w_mean, *best)


def _scaled_fake_quant(w: torch.Tensor, s: torch.Tensor, scheme) -> torch.Tensor:
    """Q(W diag s) diag(1/s) in float32 (W itself when the layer is not quantized)."""
    if scheme is None:
        return w.float()
    return fake_quantize(w.float() * s[None, :], scheme.replace(scale_dtype=scheme.scale_dtype or "float32")) \
        .float() / s[None, :]
