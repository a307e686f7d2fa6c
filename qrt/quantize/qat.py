"""Quantization-aware training, torchao's two-step flow:

  model = qrt.quantize.qat.prepare(model, "w4a16")   # Linear -> FakeQuantLinear, then train as usual
  model = qrt.quantize.qat.convert(model)            # FakeQuantLinear -> QuantLinear, same numerics

FakeQuantLinear keeps the float weight as the trained parameter. Each forward quantizes it
exactly as QuantLinear.from_linear would (min-max qparams rounded to the layer's scale
dtype, round, clamp) and dequantizes; the backward is a straight-through estimator that
passes the gradient where the value was inside the integer range and zero where it was
clamped (torchao's _GenericFakeQuantize). With int8 activations (W8A8/W4A8) the input
is fake-quantized per token the same way (absmax / 127). Qparams get no gradient.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qrt.formats.targets import set_submodule
from qrt.numerics.quant import compute_qparams, expand_groups
from qrt.quantize.plan import plan_layers
from qrt.quantize.rtn import QuantizationRecord, storage_dtype
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme, resolve_scheme
from qrt_kernels.reference import quant_rows_ref


class _FakeQuantizeSTE(torch.autograd.Function):
    """(clamp(round(x / s + z), qmin, qmax) - z) * s, computed in float32; gradient
    d out / d x = 1 inside [qmin, qmax], 0 where clamped. s, z broadcast against x."""

    @staticmethod
    def forward(ctx, x, scale, zero, qmin: int, qmax: int, dtype: torch.dtype):
        t = torch.round(x.float() / scale + zero)
        inside = (t >= qmin) & (t <= qmax)
        ctx.save_for_backward(inside)
        ctx.x_dtype = x.dtype
        return ((t.clamp(qmin, qmax) - zero) * scale).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return (grad * inside).to(ctx.x_dtype), None, None, None, None, None


def fake_quantize_weight(w: torch.Tensor, scheme: QuantScheme, dtype: torch.dtype | None = None) -> torch.Tensor:
    """w [out, in] -> its dequantized RTN value [out, in] in dtype (default w's; the
    product is rounded once, like QuantLinear.dequantize_weight), differentiable (STE)."""
    scale, zero = compute_qparams(w.detach(), scheme)
    gs = scheme.effective_group_size(w.shape[1])
    s = expand_groups(scale.float(), gs, w.shape[1])
    z = torch.zeros_like(s) if zero is None else expand_groups(zero.float(), gs, w.shape[1])
    return _FakeQuantizeSTE.apply(w, s, z, scheme.qmin, scheme.qmax, dtype or w.dtype)


def fake_quantize_tokens(x: torch.Tensor) -> torch.Tensor:
    """x [..., in] -> per-token symmetric int8 fake quantization (float32), STE.

    The integers come from the runtime's own quantizer (the twin of the per-token kernel,
    qrt_kernels.reference.quant_rows_ref), so values on a rounding tie land where
    qrt.runtime.int8_act puts them; per-token absmax scaling never clamps, so the straight-through
    gradient is 1 everywhere."""
    xf = x.float()
    rows = xf.detach().reshape(-1, xf.shape[-1])
    q, scale, _ = quant_rows_ref(rows)
    deq = (q.float() * scale[:, None]).reshape(xf.shape)
    return xf + (deq - xf).detach()


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward sees its weight (and, for WxA8, its input) fake-quantized."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: QuantScheme) -> "FakeQuantLinear":
        if scheme.activations is not None and not scheme.activations.dynamic:
            raise ValueError("QAT supports dynamic (per-token) activations only, found a static "
                             "activation scheme (it needs an observer for input_scale)")
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype)
        m.weight = linear.weight
        m.bias = linear.bias
        m.scheme = scheme
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scheme.activations is None:
            w = fake_quantize_weight(self.weight, self.scheme, x.dtype)
            return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))
        w = fake_quantize_weight(self.weight, self.scheme, torch.float32)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(fake_quantize_tokens(x), w, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scheme={self.scheme}"


def prepare(model: nn.Module, scheme: "str | QuantScheme", targets: Sequence[str] = ("Linear",),
            ignore: Sequence[str] = ("lm_head",), ragged_groups: bool = False) -> nn.Module:
    """Swap every target nn.Linear (not in ignore; a tied lm_head is skipped) for a
    FakeQuantLinear sharing its parameters, in place; returns the model. Per-layer schemes
    follow qrt.quantize_model (16-bit scales, dividing group sizes unless ragged_groups)."""
    scheme = resolve_scheme(scheme)
    plan, adjusted, ignore, tied = plan_layers(model, scheme, targets, ignore, ragged_groups)
    for name, (linear, layer_s) in plan.items():
        set_submodule(model, name, FakeQuantLinear.from_linear(linear, layer_s))
    model.qrt_qat = QuantizationRecord(scheme=scheme, targets=tuple(targets), ignore=ignore, adjusted=adjusted,
                                       tied_head=tied[0] if tied else None, method="qat")
    return model


@torch.no_grad()
def convert(model: nn.Module) -> nn.Module:
    """Swap every FakeQuantLinear for the QuantLinear with the same numerics, in place;
    the model gets the `qrt_quantization` record save_quantized uses."""
    fakes = [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    if not fakes:
        raise ValueError("model has no FakeQuantLinear layers; call qrt.quantize.qat.prepare(model, scheme) first")
    for name, m in fakes:
        set_submodule(model, name, QuantLinear.from_linear(m, m.scheme))
    record = getattr(model, "qrt_qat", None)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if record is not None:
        model.qrt_quantization = QuantizationRecord(
            scheme=record.scheme, targets=record.targets, ignore=record.ignore, adjusted=record.adjusted,
            tied_head=record.tied_head, storage_dtype=storage_dtype(dtype), method="qat")
        del model.qrt_qat
    return model
