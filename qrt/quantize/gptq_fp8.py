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

import warnings

import torch

from qrt.numerics.fp import FloatQuantizedWeight, fp8_codes, quantize_fp8
from qrt.numerics.quant import check_finite
from qrt.quantize.gptq import GPTQFallbackWarning, gptq_sweep, prepare_sweep, single_thread
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
    _check_args(w, hessian, scheme, block_size, percdamp, actorder)
    rtn = quantize_fp8(w.detach(), per_channel=scheme.strategy == "channel", scale_dtype=fp8_scale_dtype(scheme))
    with single_thread(w.device):
        prepared = prepare_sweep(w.detach(), hessian.detach(), percdamp, actorder)
        if prepared is None:
            warnings.warn(f"GPTQ: the Hessian of {name} is not positive definite after dampening "
                          f"(percdamp={percdamp}); quantizing {name} with round-to-nearest FP8 instead. "
                          "More calibration samples or a larger percdamp usually fix this.",
                          GPTQFallbackWarning, stacklevel=2)
            return rtn
        W, U, perm, mask = prepared
        quant = FP8ColumnQuantizer(rtn.scale, w.shape[0], w.dtype)
        Q = gptq_sweep(W, U, quant, block_size, dynamic_groups=False, mask=mask)
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return FloatQuantizedWeight(Q.contiguous(), rtn.scale)


def _check_args(w, hessian, scheme, block_size, percdamp, actorder) -> None:
    if not (scheme.is_float and scheme.bits == 8):
        raise ValueError(f"FP8 GPTQ needs an FP8 scheme (type 'float', 8 bits), found {scheme}")
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], found shape {tuple(w.shape)}")
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Hessian must be [in, in] = {(w.shape[1],) * 2}, found {tuple(hessian.shape)}")
    if actorder not in (None, "weight"):
        raise ValueError(f"FP8 GPTQ takes actorder None or 'weight' (no groups), found {actorder!r}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, found {block_size!r}")
    if not 0.0 <= percdamp:
        raise ValueError(f"percdamp must be >= 0, found {percdamp!r}")
    check_finite(w)
