"""What FP8 and FP4 GPTQ share (qrt.quantize.gptq_fp8, gptq_fp4): the argument checks and
the column sweep with fixed, RTN-derived scales, visited in natural or activation order,
with RTN as the fallback when the Hessian is not positive definite after dampening."""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from qrt.numerics.quant import check_finite
from qrt.quantize.gptq import GPTQFallbackWarning, gptq_sweep, prepare_sweep, single_thread
from qrt.schemes import QuantScheme


def check_float_gptq_args(w, hessian, scheme: QuantScheme, bits: int, fmt: str, expected: str,
                          actorder_note: str, block_size, percdamp, actorder) -> None:
    """ValueError naming the bad argument; fmt: "FP8" / "FP4"; expected: the schemes taken."""
    if not (scheme.is_float and scheme.bits == bits):
        raise ValueError(f"{fmt} GPTQ needs an {fmt} scheme ({expected}), found {scheme}")
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], found shape {tuple(w.shape)}")
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Hessian must be [in, in] = {(w.shape[1],) * 2}, found {tuple(hessian.shape)}")
    if actorder not in (None, "weight"):
        raise ValueError(f"{fmt} GPTQ takes actorder None or 'weight' ({actorder_note}), found {actorder!r}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, found {block_size!r}")
    if not 0.0 <= percdamp:
        raise ValueError(f"percdamp must be >= 0, found {percdamp!r}")
    check_finite(w)


def float_gptq_codes(w: torch.Tensor, hessian: torch.Tensor, make_quantizer: Callable, fmt: str, *,
                     block_size: int, percdamp: float, actorder: str | None, name: str) -> torch.Tensor | None:
    """The sweep's codes [out, in] in the original column order, or None (after a
    GPTQFallbackWarning: the caller returns its RTN result). make_quantizer(perm): the column
    quantizer for columns visited in order perm (None: natural order)."""
    with single_thread(w.device):
        prepared = prepare_sweep(w.detach(), hessian.detach(), percdamp, actorder)
        if prepared is None:
            warnings.warn(f"GPTQ: the Hessian of {name} is not positive definite after dampening "
                          f"(percdamp={percdamp}); quantizing {name} with round-to-nearest {fmt} instead. "
                          "More calibration samples or a larger percdamp usually fix this.",
                          GPTQFallbackWarning, stacklevel=3)
            return None
        W, U, perm, mask = prepared
        Q = gptq_sweep(W, U, make_quantizer(perm), block_size, dynamic_groups=False, mask=mask)
    return (Q if perm is None else Q[:, torch.argsort(perm)]).contiguous()
