"""GPTQ for FP4 (e2m1) weights, NVFP4 and MXFP4: the integer GPTQ sweep (qrt.quantize.gptq)
with an e2m1 quantizer in place of the integer one, as qrt.quantize.gptq_fp8 does for FP8.

The group scales are RTN's, fixed up front from the original weight (qrt.numerics.fp:
NVFP4's e4m3 group scales over its fp32 global scale, MXFP4's e8m0 exponents), so the
checkpoint tensors other than the codes are RTN's bit for bit and the file is an ordinary
nvfp4- / mxfp4-pack-quantized one. Each column is rounded to the nearest e2m1 value of its
group's scale (ties to even, saturating at ±6: an error-updated weight may outgrow its
group's absmax) and its rounding error spread over the not-yet-quantized columns. The
groups are contiguous in the original column order, so activation order ("weight") only
changes the order columns are visited in, never the file.
"""
from __future__ import annotations

import warnings

import torch

from qrt.numerics.fp import E8M0_BIAS, FloatQuantizedWeight, e2m1_codes, pack_fp4
from qrt.numerics.quant import check_finite
from qrt.quantize.gptq import GPTQFallbackWarning, gptq_sweep, prepare_sweep, single_thread
from qrt.runtime.fp_linear import quantize_float
from qrt.schemes import QuantScheme
from qrt_kernels.reference import e2m1_to_float


def group_scales(rtn: FloatQuantizedWeight) -> torch.Tensor:
    """The float32 multiplier of each group [out, in / group] that RTN's codes were divided by."""
    if rtn.global_scale is not None:  # NVFP4
        return rtn.scale.float() / rtn.global_scale.float()
    return torch.exp2(rtn.scale.float() - E8M0_BIAS)  # MXFP4


class FP4ColumnQuantizer:
    """Per-(row, column) e2m1 scales in processing order; fake-quantizes one column at a time
    (gptq_sweep's quantizer). Codes are uint8 e2m1 (bit 3 sign), unpacked."""

    code_dtype = torch.uint8
    group_size = None  # the scales are fixed: the sweep never starts a group

    def __init__(self, col_scale: torch.Tensor, weight_dtype: torch.dtype):
        self.col_scale, self.weight_dtype = col_scale, weight_dtype

    def fake_quantize(self, w: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.col_scale[:, j]
        q = e2m1_codes(w / s)
        return q, (e2m1_to_float(q) * s).to(self.weight_dtype).float()


def gptq_quantize_fp4_weight(w: torch.Tensor, hessian: torch.Tensor, scheme: QuantScheme, *,
                             block_size: int = 128, percdamp: float = 0.01, actorder: str | None = None,
                             static_groups: bool | None = None, name: str = "layer") -> FloatQuantizedWeight:
    """GPTQ of one weight w [out, in] into the FP4 scheme `scheme` (nvfp4a16, mxfp4a16) given
    its input Hessian [in, in] (2 X^T X / n). actorder None or "weight"; static_groups has no
    effect (the scales are always RTN's). Returns the layout of qrt.numerics.fp.quantize_nvfp4
    / quantize_mxfp4. A Hessian that is not positive definite after dampening ->
    GPTQFallbackWarning and RTN."""
    _check_args(w, hessian, scheme, block_size, percdamp, actorder)
    rtn = quantize_float(w.detach(), scheme)
    with single_thread(w.device):
        prepared = prepare_sweep(w.detach(), hessian.detach(), percdamp, actorder)
        if prepared is None:
            warnings.warn(f"GPTQ: the Hessian of {name} is not positive definite after dampening "
                          f"(percdamp={percdamp}); quantizing {name} with round-to-nearest FP4 instead. "
                          "More calibration samples or a larger percdamp usually fix this.",
                          GPTQFallbackWarning, stacklevel=2)
            return rtn
        W, U, perm, mask = prepared
        col_scale = group_scales(rtn).repeat_interleave(scheme.group_size, dim=1)
        if perm is not None:
            col_scale = col_scale[:, perm]
        Q = gptq_sweep(W, U, FP4ColumnQuantizer(col_scale.contiguous(), w.dtype), block_size,
                       dynamic_groups=False, mask=mask)
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return FloatQuantizedWeight(pack_fp4(Q.contiguous()), rtn.scale, rtn.global_scale)


def _check_args(w, hessian, scheme, block_size, percdamp, actorder) -> None:
    if not (scheme.is_float and scheme.bits == 4):
        raise ValueError(f"FP4 GPTQ needs an FP4 scheme (type 'float', 4 bits: nvfp4a16, mxfp4a16), found {scheme}")
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], found shape {tuple(w.shape)}")
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Hessian must be [in, in] = {(w.shape[1],) * 2}, found {tuple(hessian.shape)}")
    if actorder not in (None, "weight"):
        raise ValueError(f"FP4 GPTQ takes actorder None or 'weight' (its groups stay in the original "
                         f"column order), found {actorder!r}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, found {block_size!r}")
    if not 0.0 <= percdamp:
        raise ValueError(f"percdamp must be >= 0, found {percdamp!r}")
    check_finite(w)
