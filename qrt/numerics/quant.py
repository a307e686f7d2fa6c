"""Round-to-nearest quantization math: qparams, quantize, dequantize.

Conventions follow compressed-tensors so checkpoints mean the same thing to vLLM:
  symmetric:  scale = absmax / ((qmax - qmin) / 2),  zero = 0
  asymmetric: scale = (max - min) / (qmax - qmin),     zero = round(qmin - min / scale)
  (min <= 0 <= max is forced, so 0.0 is always exact)
  q = clamp(round(w / scale + zero), qmin, qmax);  w_hat = (q - zero) * scale

Shapes: weights [out, in]; scales and zero points [out, n_groups] (channel and tensor
strategies: [out, 1], the tensor scale broadcast over rows). Column j belongs to group
j // group_size, or g_idx[j] when an act-order g_idx is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qrt.schemes import QuantScheme


@dataclass(frozen=True)
class QuantizedWeight:
    """Unpacked integer weights and their qparams. q: int8 [out, in] in [qmin, qmax];
    scale: [out, n_groups]; zero: int8 [out, n_groups] or None (symmetric);
    g_idx: int32 [in] or None."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    g_idx: torch.Tensor | None = None


def expand_groups(t: torch.Tensor, group_size: int, in_features: int,
                  g_idx: torch.Tensor | None = None) -> torch.Tensor:
    """[out, n_groups] -> [out, in]: the per-column value of a per-group tensor."""
    if g_idx is not None:
        return t[:, g_idx.long()]
    return t.repeat_interleave(group_size, dim=1)[:, :in_features]


def _group_view(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] -> [out, n_groups, group_size], the ragged last group padded with its own
    first value so min/max are unaffected."""
    out_f, in_f = w.shape
    n_groups = -(-in_f // group_size)
    pad = n_groups * group_size - in_f
    if pad:
        w = torch.cat([w, w[:, -1:].expand(out_f, pad)], dim=1)
    return w.reshape(out_f, n_groups, group_size)


def check_finite(w: torch.Tensor, what: str = "weight") -> None:
    if not torch.isfinite(w).all():
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ValueError(f"{what} of shape {tuple(w.shape)} contains NaN/Inf "
                         f"(first at index {bad}); cannot quantize")


def compute_qparams(w: torch.Tensor, scheme: QuantScheme,
                    scale_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min-max qparams of `w` [out, in] -> (scale [out, n_groups], zero int8 or None).

    The math runs in float32; the scale is then rounded to `scale_dtype` (default: the
    scheme's, else w's dtype) and the zero point is computed from that rounded scale, so
    quantize() with the stored scale reproduces exactly what a reader will dequantize.
    """
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], found shape {tuple(w.shape)}")
    check_finite(w)
    out_f, in_f = w.shape
    wf = w.float()
    if scheme.strategy == "tensor":
        lo, hi = wf.min().expand(out_f, 1), wf.max().expand(out_f, 1)
    else:
        g = _group_view(wf, scheme.effective_group_size(in_f))
        lo, hi = g.amin(dim=2), g.amax(dim=2)
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    dtype = scale_dtype or scheme.scale_torch_dtype(w.dtype)
    tiny = torch.finfo(dtype).tiny  # an all-zero group gets a tiny scale: q=0, no div by 0
    if scheme.symmetric:
        scale = torch.maximum(-lo, hi) / ((scheme.qmax - scheme.qmin) / 2)
        scale = scale.clamp(min=tiny).to(dtype)
        return scale.contiguous(), None
    scale = ((hi - lo) / (scheme.qmax - scheme.qmin)).clamp(min=tiny).to(dtype)
    zero = torch.round(scheme.qmin - lo / scale.float()).clamp(scheme.qmin, scheme.qmax)
    return scale.contiguous(), zero.to(torch.int8).contiguous()


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int,
             group_size: int, g_idx: torch.Tensor | None = None) -> torch.Tensor:
    """w [out, in] -> int8 q [out, in] in the signed `bits` range."""
    in_f = w.shape[1]
    s = expand_groups(scale.float(), group_size, in_f, g_idx)
    x = w.float() / s
    if zero is not None:
        x = x + expand_groups(zero.float(), group_size, in_f, g_idx)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return torch.round(x).clamp(qmin, qmax).to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int,
               dtype: torch.dtype | None = None, g_idx: torch.Tensor | None = None) -> torch.Tensor:
    """int q [out, in] -> (q - zero) * scale [out, in], computed in float32, cast to dtype
    (default: the scale's dtype)."""
    in_f = q.shape[1]
    x = q.float()
    if zero is not None:
        x = x - expand_groups(zero.float(), group_size, in_f, g_idx)
    x = x * expand_groups(scale.float(), group_size, in_f, g_idx)
    return x.to(dtype or scale.dtype)


def quantize_weight(w: torch.Tensor, scheme: QuantScheme,
                    scale_dtype: torch.dtype | None = None) -> QuantizedWeight:
    """RTN: min-max qparams, then round. w [out, in] float."""
    scale, zero = compute_qparams(w, scheme, scale_dtype)
    gs = scheme.effective_group_size(w.shape[1])
    return QuantizedWeight(quantize(w, scale, zero, scheme.bits, gs), scale, zero)


def fake_quantize(w: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """quantize then dequantize, in w's dtype (the numerics QuantLinear reproduces)."""
    qw = quantize_weight(w, scheme)
    return dequantize(qw.q, qw.scale, qw.zero, scheme.effective_group_size(w.shape[1]), dtype=w.dtype)
