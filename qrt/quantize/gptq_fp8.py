"""GPTQ for FP8 (e4m3) weights: the integer GPTQ sweep (qrt.quantize.gptq) with an FP8
quantizer in place of the integer one.

The scales are RTN's, fixed up front from the original weight (compressed-tensors'
convention, qrt.numerics.fp.quantize_fp8): scale[n] = max|W[n]| / 448 per output channel
(or one for the tensor), stored in the scheme's scale dtype. Each column is then rounded
with the same FP8 rounding as RTN (qrt.numerics.fp.fp8_codes, saturating at ±448: an
error-updated weight may outgrow its row's absmax) and its rounding error spread over the
not-yet-quantized columns. The result is a FloatQuantizedWeight laid out exactly as RTN's,
so the checkpoint is an ordinary float-quantized compressed-tensors file; activation order
only changes the order columns are visited in, not the file.

With clip=True the scales come from a Hessian-aware search instead (search_fp8_scales, the
FP8 side of GPTQ's --gptq-clip): each row takes the scale among absmax/448 * 2^(i/16),
i < 16, whose round-to-nearest error under H is least. Doubling a scale only shifts e4m3's
exponents, so one octave holds every placement of the grid against the row's weights; no
candidate clips. The file layout is unchanged (a per-row scale, codes within ±448).
"""
from __future__ import annotations

import torch

from qrt.numerics.fp import FloatQuantizedWeight, fp8_codes, quantize_fp8
from qrt.quantize.gptq_float import check_float_gptq_args, float_gptq_codes

SCALE_SEARCH_POINTS = 16
from qrt.runtime.fp_linear import fp8_scale_dtype
from qrt.schemes import QuantScheme


class FP8ColumnQuantizer:
    """Fixed per-row FP8 scales; fake-quantizes one column at a time (gptq_sweep's quantizer)."""

    code_dtype = torch.float8_e4m3fn
    group_size = None  # one scale per row: the sweep never starts a group

    def __init__(self, scale: torch.Tensor, out_f: int, weight_dtype: torch.dtype):
        self.weight_dtype = weight_dtype
        self.row_scale = scale.float().reshape(-1, 1).expand(out_f, 1).reshape(out_f).clone()

    def fake_quantize(self, w: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Column w [out] -> (fp8 codes [out], dequantized [out] float32, rounded to the
        weight dtype as the layer will see it)."""
        q = fp8_codes(w, self.row_scale)
        return q, (q.float() * self.row_scale).to(self.weight_dtype).float()


@torch.no_grad()
def search_fp8_scales(w: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor,
                      points: int = SCALE_SEARCH_POINTS) -> torch.Tensor:
    """w [out, in], hessian [in, in], scale: RTN's ([out, 1] per row, or [1] for the tensor)
    -> the scale among scale * 2^(i/points), i < points (rounded to scale's dtype), whose
    FP8 round-to-nearest error sum_rows dW H dW^T is least, per row (or summed over rows for
    a tensor scale). i = 0 is RTN's own scale, so the result is never worse than RTN under H."""
    if points < 1:
        raise ValueError(f"points must be >= 1, found {points!r}")
    wf, h = w.float(), hessian.float()
    per_row = scale.numel() != 1
    best, best_err = scale.clone(), None
    for i in range(points):
        cand = (scale.float() * 2.0 ** (i / points)).to(scale.dtype)
        s = cand.float() if per_row else cand.float().reshape(1, 1)
        dw = fp8_codes(wf, s).float() * s - wf
        err = ((dw @ h) * dw).sum(dim=1, keepdim=True)
        if not per_row:
            err = err.sum().reshape(1)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, cand, best)
    return best.contiguous()


def gptq_quantize_fp8_weight(w: torch.Tensor, hessian: torch.Tensor, scheme: QuantScheme, *,
                             block_size: int = 128, percdamp: float = 0.01, actorder: str | None = None,
                             static_groups: bool | None = None, name: str = "layer",
                             clip: bool = False) -> FloatQuantizedWeight:
    """GPTQ of one weight w [out, in] into the FP8 scheme `scheme` given its input Hessian
    [in, in] (2 X^T X / n). actorder None or "weight" (both visit the columns in a fixed
    order with RTN's scales; "weight" sorts them by descending diag H). static_groups is
    accepted for the integer API's sake and has no effect (there are no groups). Returns
    codes float8_e4m3fn [out, in] and scale [out, 1] (channel) or [1] (tensor), as
    qrt.numerics.fp.quantize_fp8. clip: the scales from search_fp8_scales (under H) instead
    of RTN's. A Hessian that is not positive definite after dampening -> GPTQFallbackWarning
    and round to nearest with those scales."""
    check_float_gptq_args(w, hessian, scheme, 8, "FP8", "type 'float', 8 bits", "no groups",
                          block_size, percdamp, actorder)
    rtn = quantize_fp8(w.detach(), per_channel=scheme.strategy == "channel", scale_dtype=fp8_scale_dtype(scheme))
    if clip:
        scale = search_fp8_scales(w.detach(), hessian.detach(), rtn.scale)
        rtn = FloatQuantizedWeight(fp8_codes(w.detach(), scale.float() if scale.numel() != 1
                                             else scale.float().reshape(1, 1)), scale)
    Q = float_gptq_codes(w, hessian, lambda perm: FP8ColumnQuantizer(rtn.scale, w.shape[0], w.dtype), "FP8",
                         block_size=block_size, percdamp=percdamp, actorder=actorder, name=name)
    return rtn if Q is None else FloatQuantizedWeight(Q, rtn.scale)
