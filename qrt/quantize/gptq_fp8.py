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
"""
from __future__ import annotations

import torch

from qrt.numerics.fp import FloatQuantizedWeight, fp8_codes, quantize_fp8
from qrt.quantize.gptq_float import check_float_gptq_args, float_gptq_codes
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


def gptq_quantize_fp8_weight(w: torch.Tensor, hessian: torch.Tensor, scheme: QuantScheme, *,
                             block_size: int = 128, percdamp: float = 0.01, actorder: str | None = None,
                             static_groups: bool | None = None, name: str = "layer") -> FloatQuantizedWeight:
    """GPTQ of one weight w [out, in] into the FP8 scheme `scheme` given its input Hessian
    [in, in] (2 X^T X / n). actorder None or "weight" (both visit the columns in a fixed
    order with RTN's scales; "weight" sorts them by descending diag H). static_groups is
    accepted for the integer API's sake and has no effect (there are no groups). Returns
    codes float8_e4m3fn [out, in] and scale [out, 1] (channel) or [1] (tensor), as
    qrt.numerics.fp.quantize_fp8. A Hessian that is not positive definite after dampening
    -> GPTQFallbackWarning and RTN."""
    check_float_gptq_args(w, hessian, scheme, 8, "FP8", "type 'float', 8 bits", "no groups",
                          block_size, percdamp, actorder)
    rtn = quantize_fp8(w.detach(), per_channel=scheme.strategy == "channel", scale_dtype=fp8_scale_dtype(scheme))
    Q = float_gptq_codes(w, hessian, lambda perm: FP8ColumnQuantizer(rtn.scale, w.shape[0], w.dtype), "FP8",
                         block_size=block_size, percdamp=percdamp, actorder=actorder, name=name)
    return rtn if Q is None else FloatQuantizedWeight(Q, rtn.scale)
