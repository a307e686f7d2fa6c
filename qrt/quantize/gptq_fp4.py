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

import torch

from qrt.numerics.fp import E8M0_BIAS, FloatQuantizedWeight, e2m1_codes, pack_fp4
from qrt.quantize.gptq_float import check_float_gptq_args, float_gptq_codes
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
    check_float_gptq_args(w, hessian, scheme, 4, "FP4", "type 'float', 4 bits: nvfp4a16, mxfp4a16",
                          "its groups stay in the original column order", block_size, percdamp, actorder)
    rtn = quantize_float(w.detach(), scheme)
    col_scale = group_scales(rtn).repeat_interleave(scheme.group_size, dim=1)

    def quantizer(perm):
        return FP4ColumnQuantizer((col_scale if perm is None else col_scale[:, perm]).contiguous(), w.dtype)
    Q = float_gptq_codes(w, hessian, quantizer, "FP4", block_size=block_size, percdamp=percdamp,
                         actorder=actorder, name=name)
    return rtn if Q is None else FloatQuantizedWeight(pack_fp4(Q), rtn.scale, rtn.global_scale)
