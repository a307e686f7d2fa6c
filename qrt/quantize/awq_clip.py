"""AWQ's clipping search (AutoAWQ's auto_clip), on the Gram matrix of a Linear's inputs.

For each row o and quantization group g of W [out, in], try the shrunk ranges
m_i = (1 - i / n_grid) max_j |W_oj| (i < max_shrink * n_grid; i = 0 is no clipping), clamp
the group to [-m_i, m_i], round it to nearest with the layer's own scheme, and keep the m_i
with the least error of the group's contribution to the output:
  e_og = || (Q(clamp(W_og)) - W_og) X_g ||^2 = dW_og G_gg dW_og^T,   G = X^T X
(AutoAWQ computes the same per-group partial outputs from sampled tokens; G_gg, the
diagonal block of G, gives it for every calibration token). The clamped weights are
returned: round to nearest then sees the clipped range, so the scales shrink with it.
"""
from __future__ import annotations

import torch

from qrt.numerics.quant import fake_quantize


@torch.no_grad()
def clip_weights(w: torch.Tensor, gram: torch.Tensor, scheme, n_grid: int = 20,
                 max_shrink: float = 0.5) -> torch.Tensor:
    """w [out, in], gram [in, in] = X^T X of the layer's inputs -> the clamped w (float32).
    Symmetric integer schemes only (the clamp is [-m, m]); others are returned unchanged."""
    if scheme is None or scheme.is_float or not scheme.symmetric or scheme.strategy == "tensor":
        return w.float()
    out, cin = w.shape
    gs = scheme.effective_group_size(cin) if scheme.strategy == "group" else cin
    if cin % gs:
        raise ValueError(f"AWQ clip: {cin} input columns are not a multiple of the group size {gs}")
    ng = cin // gs
    w3 = w.float().reshape(out, ng, gs)
    blocks = torch.stack([gram[g * gs:(g + 1) * gs, g * gs:(g + 1) * gs] for g in range(ng)]).float()
    full = w3.abs().amax(dim=-1, keepdim=True)
    best_m, best_err = full.clone(), torch.full((out, ng), float("inf"))
    q_scheme = scheme.replace(scale_dtype=scheme.scale_dtype or "float32")
    for i in range(int(max_shrink * n_grid)):
        m = full * (1 - i / n_grid)
        wc = torch.maximum(torch.minimum(w3, m), -m)
        dw = fake_quantize(wc.reshape(out, cin), q_scheme).float().reshape(out, ng, gs) - w3
        err = torch.einsum("ogi,gij,ogj->og", dw, blocks, dw)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_m = torch.where(better[..., None], m, best_m)
    return torch.maximum(torch.minimum(w3, best_m), -best_m).reshape(out, cin)
