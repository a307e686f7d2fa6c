"""QuantLinear with float weights: FP8 e4m3 (weight-only or with dynamic per-token FP8
activations) and FP4 e2m1 (NVFP4, MXFP4; weight-only, and NVFP4 W4A4 read from
compressed-tensors checkpoints).

Buffers (checkpoint layout, compressed-tensors' names; `weight_packed` holds the codes of
every kind so the layer's device logic is the integer layer's):
  FP8    weight_packed float8_e4m3fn [out, in]    (written as `weight`, float-quantized)
         weight_scale  [out, 1] (channel) or [1] (tensor), float32 unless the scheme says
  NVFP4  weight_packed uint8 [out, in/2]; weight_scale float8_e4m3fn [out, in/16];
         weight_global_scale float32 [1]
         input_global_scale float32 [1]   NVFP4 activations (W4A4) only; NaN until assigned
  MXFP4  weight_packed uint8 [out, in/2]; weight_scale uint8 (e8m0) [out, in/32]

Backends (registered in qrt.runtime.backends.FLOAT): "triton" (CUDA; the CPU under TRITON_INTERPRET=1 when asked for): the custom ops
qrt.fp8_linear / qrt.fp4_matmul on the checkpoint tensors as they are. "dense" (the CPU
path): FP8 keeps the codes widened to fp32 (exact) and runs the kernel twin's math
(per-token FP8 activations included); FP4 keeps the dequantized weight in the layer dtype.

W4A4 (NVFP4 activations) is a dequantizing read, not a W4A4 kernel: on every backend the
input goes through qrt.numerics.fp.fake_quant_nvfp4_act (plain torch: e4m3 scale per 16,
e2m1 values, dequantized back to x.dtype) and then through the weight-only FP4 path above,
so the numbers are compressed-tensors' W4A4 numbers but the speed is NVFP4A16's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import qrt_kernels.ops  # noqa: F401  (registers torch.ops.qrt.*)
from qrt.numerics.fp import (FloatQuantizedWeight, dequantize_fp4, dequantize_fp8, fake_quant_nvfp4_act,
                             quantize_fp8, quantize_mxfp4, quantize_nvfp4)
from qrt.schemes import FLOAT_DTYPES, QuantScheme
from qrt_kernels.dispatch import triton_runs_on
from qrt_kernels.reference import fp8_linear_ref


def fp8_scale_dtype(s: QuantScheme) -> torch.dtype:
    return FLOAT_DTYPES[s.scale_dtype or "float32"]


def register_float_buffers(layer, device) -> None:
    """Empty checkpoint buffers of a float scheme (shapes fixed, so meta skeletons work)."""
    s, out_f, in_f, kw = layer.scheme, layer.out_features, layer.in_features, dict(device=device)
    if s.bits == 8:
        layer.register_buffer("weight_packed", torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn, **kw))
        shape = (1,) if s.strategy == "tensor" else (out_f, 1)
        layer.register_buffer("weight_scale", torch.empty(shape, dtype=fp8_scale_dtype(s), **kw))
    else:
        if in_f % s.group_size:
            raise ValueError(f"FP4 layer: in_features {in_f} must be divisible by the group size {s.group_size}")
        nvfp4 = s.strategy == "tensor_group"
        layer.register_buffer("weight_packed", torch.empty(out_f, in_f // 2, dtype=torch.uint8, **kw))
        layer.register_buffer("weight_scale", torch.empty(
            out_f, in_f // s.group_size, dtype=torch.float8_e4m3fn if nvfp4 else torch.uint8, **kw))
        if nvfp4:
            layer.register_buffer("weight_global_scale", torch.empty(1, dtype=torch.float32, **kw))
    if "weight_global_scale" not in layer._buffers:
        layer.weight_global_scale = None
    if s.activations is not None and s.activations.is_nvfp4:
        # NaN until assigned from a checkpoint: qrt cannot calibrate it (build refuses NaN)
        layer.register_buffer("input_global_scale", torch.full((1,), float("nan"), dtype=torch.float32, **kw))
    else:
        layer.input_global_scale = None
    layer.weight_zero_point = layer.weight_g_idx = layer.input_scale = None


def quantize_float(w: torch.Tensor, s: QuantScheme) -> FloatQuantizedWeight:
    """RTN of a weight [out, in] into the scheme's float format."""
    if s.bits == 8:
        return quantize_fp8(w, per_channel=s.strategy == "channel", scale_dtype=fp8_scale_dtype(s))
    if s.strategy == "tensor_group":
        return quantize_nvfp4(w, s.group_size)
    return quantize_mxfp4(w, s.group_size)


def fill_float_buffers(layer, qw: FloatQuantizedWeight) -> None:
    for name, t in (("weight_packed", qw.codes), ("weight_scale", qw.scale),
                    ("weight_global_scale", qw.global_scale)):
        buf = getattr(layer, name)
        if (t is None) != (buf is None):
            raise ValueError(f"{name}: the scheme {'needs' if buf is not None else 'takes no'} this tensor")
        if t is not None:
            if tuple(t.shape) != tuple(buf.shape):
                raise ValueError(f"{name}: expected shape {tuple(buf.shape)}, found {tuple(t.shape)}")
            buf.copy_(t.to(buf.dtype))


def float_qweight(layer) -> FloatQuantizedWeight:
    return FloatQuantizedWeight(layer.weight_packed, layer.weight_scale, layer.weight_global_scale)


def dequantize_float(layer, dtype: torch.dtype) -> torch.Tensor:
    """fp weight [out, in] in dtype (computed in float32)."""
    if layer.scheme.bits == 8:
        return dequantize_fp8(layer.weight_packed, layer.weight_scale, dtype)
    return dequantize_fp4(float_qweight(layer), layer.scheme.group_size, layer.in_features, dtype)


@dataclass(frozen=True)
class FloatKernel:
    """The kernel of a float layer's runtime (qrt.runtime.backends.FLOAT). triton: the op's
    tensors; dense: w fp32 codes (FP8, with w_scale fp32 [N]) or the dequantized weight (FP4).
    act_global_scale: NVFP4 activations' input_global_scale fp32 [1] (W4A4), else None."""

    w: torch.Tensor
    w_scale: torch.Tensor | None
    global_scale: torch.Tensor | None
    act_global_scale: torch.Tensor | None = None


def _channel_scale(layer) -> torch.Tensor:
    return layer.weight_scale.float().reshape(-1).expand(layer.out_features).contiguous()


def _act_global_scale(layer) -> torch.Tensor | None:
    gs = layer.input_global_scale
    if gs is not None and not (torch.isfinite(gs).all() and (gs > 0).all()):
        raise ValueError(f"input_global_scale: expected a positive finite fp32 [1] (calibrated NVFP4 activations), "
                         f"found {gs.tolist()}; qrt cannot calibrate W4A4 activations: load a checkpoint that "
                         "holds them (llmcompressor's NVFP4 scheme)")
    return gs


def float_triton_usable(layer, device: torch.device) -> bool:
    return triton_runs_on(device)


def float_dense_usable(layer, device: torch.device) -> bool:
    return True


def build_float_triton(layer) -> tuple[FloatKernel, None]:
    """The custom ops take the checkpoint tensors as they are (FP8: scale per channel, fp32)."""
    fp8 = layer.scheme.bits == 8
    return FloatKernel(layer.weight_packed, _channel_scale(layer) if fp8 else layer.weight_scale,
                       layer.weight_global_scale, _act_global_scale(layer)), None


def build_float_dense(layer) -> tuple[FloatKernel, None]:
    if layer.scheme.bits == 8:
        return FloatKernel(layer.weight_packed.float(), _channel_scale(layer), None), None
    return FloatKernel(dequantize_float(layer, layer.dtype), None, None, _act_global_scale(layer)), None


def linear_float(layer, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] -> [..., out] in x.dtype."""
    if x.shape[-1] != layer.in_features:
        raise ValueError(f"x: expected last dim {layer.in_features} (in_features), found shape {tuple(x.shape)}")
    rt: FloatKernel = layer._runtime.kernel
    s = layer.scheme
    x2 = x.reshape(-1, layer.in_features).contiguous()
    act_fp8 = s.activations is not None and not s.activations.is_nvfp4
    if rt.act_global_scale is not None:  # W4A4: fake-quant the input, then the weight-only FP4 path
        x2 = fake_quant_nvfp4_act(x2, rt.act_global_scale, s.activations.group_size)
    if layer._runtime.backend == "triton":
        if s.bits == 8:
            y = torch.ops.qrt.fp8_linear(x2, rt.w, rt.w_scale, layer.bias, act_fp8)
        else:
            y = torch.ops.qrt.fp4_matmul(x2, rt.w, rt.w_scale, rt.global_scale, s.group_size, layer.bias)
    elif s.bits == 8:  # the twin's math on the fp32-widened codes (w.float() is then a no-op)
        y = fp8_linear_ref(x2, rt.w, rt.w_scale, layer.bias, act_fp8)
    else:
        y = F.linear(x2, rt.w.to(x2.dtype), None if layer.bias is None else layer.bias.to(x2.dtype))
    return y.reshape(*x.shape[:-1], layer.out_features)
