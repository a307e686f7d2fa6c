"""QuantLinear: an nn.Linear whose weight lives packed in the compressed-tensors layout.

Buffers (persistent, checkpoint layout; shapes and dtypes fixed at construction so a
meta-device skeleton can be built and filled straight from safetensors):
  weight_packed      int32 [out, ceil(in*bits/32)]   packed along in, LSB first, q + 2^(b-1)
  weight_scale       [out, n_groups] (group), [out, 1] (channel), [1] (tensor)
  weight_zero_point  int32 [ceil(out*bits/32), n_groups]  asymmetric only, packed along out
  weight_g_idx       int32 [in]                       actorder "group" only
  weight_shape       int64 [2] = (out, in)
  input_scale        float32 [1]                      static activation quantization only
Float schemes (FP8, NVFP4, MXFP4) hold their own layouts: see qrt.runtime.fp_linear.
"""
from __future__ import annotations

import torch
from torch import nn

from qrt.numerics.packing import pack_int32, packed_words, unpack_int32
from qrt.numerics.quant import QuantizedWeight, dequantize, quantize_weight
from qrt.runtime.backends import prepare_runtime
from qrt.runtime.int8_act import linear_a8
from qrt.runtime.weight_only import linear_a16
from qrt.runtime.fp_linear import (dequantize_float, fill_float_buffers, linear_float,
                                   quantize_float, register_float_buffers)
from qrt.schemes import QuantScheme, resolve_scheme


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 scheme: "str | QuantScheme" = "w4a16", dtype: torch.dtype = torch.float16,
                 device=None):
        super().__init__()
        self.scheme = resolve_scheme(scheme)
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        s, kw = self.scheme, dict(device=device)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, **kw), requires_grad=False) if bias else None
        self.register_buffer("weight_shape", torch.tensor([out_features, in_features], dtype=torch.int64,
                                                          device=device if device != "meta" else "meta"))
        if s.is_float:
            register_float_buffers(self, device)
            return
        n_groups = s.num_groups(in_features)
        scale_shape = (1,) if s.strategy == "tensor" else (out_features, n_groups)
        self.register_buffer("weight_packed", torch.empty(
            out_features, packed_words(in_features, s.bits), dtype=torch.int32, **kw))
        self.register_buffer("weight_scale", torch.empty(scale_shape, dtype=s.scale_torch_dtype(dtype), **kw))
        if not s.symmetric:
            zp_shape = (packed_words(out_features if s.strategy != "tensor" else 1, s.bits),
                        n_groups if s.strategy == "group" else 1)
            self.register_buffer("weight_zero_point", torch.empty(zp_shape, dtype=torch.int32, **kw))
        else:
            self.weight_zero_point = None
        if s.actorder == "group":
            self.register_buffer("weight_g_idx", torch.empty(in_features, dtype=torch.int32, **kw))
        else:
            self.weight_g_idx = None
        if s.activations is not None and not s.activations.dynamic:
            # NaN until calibrated: forward refuses an uncalibrated static layer
            self.register_buffer("input_scale", torch.full((1,), float("nan"), dtype=torch.float32, **kw))
        else:
            self.input_scale = None

    def extra_repr(self) -> str:
        s = self.scheme
        if s.is_float:
            kind = {8: "fp8", 4: "nvfp4" if s.strategy == "tensor_group" else "mxfp4"}[s.bits]
            acts = "a16" if s.activations is None else "a4-nvfp4-dyn" if s.activations.is_nvfp4 else "a8-fp8-dyn"
            return f"in_features={self.in_features}, out_features={self.out_features}, " \
                   f"bias={self.bias is not None}, {kind}{acts} {s.strategy}"
        g = f"g{s.group_size}" if s.strategy == "group" else s.strategy
        a = "a16" if s.activations is None else f"a8-{'dyn' if s.activations.dynamic else 'static'}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, w{s.bits}{a} {g} {'sym' if s.symmetric else 'asym'}")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: "str | QuantScheme") -> "QuantLinear":
        """Round-to-nearest quantization of an existing nn.Linear."""
        s = resolve_scheme(scheme)
        bias = linear.bias.detach() if linear.bias is not None else None
        if s.is_float:
            w = linear.weight.detach()
            m = cls(w.shape[1], w.shape[0], bias=bias is not None, scheme=s, dtype=w.dtype, device=w.device)
            fill_float_buffers(m, quantize_float(w, s))
            if bias is not None:
                m.bias.data.copy_(bias)
            return m
        qw = quantize_weight(linear.weight.detach(), s)
        return cls.from_quantized(qw, s, bias=bias, dtype=linear.weight.dtype)

    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, scheme: "str | QuantScheme",
                       bias: torch.Tensor | None = None, dtype: torch.dtype = torch.float16) -> "QuantLinear":
        """Pack an already-quantized weight (RTN, GPTQ, QAT) into a new layer.
        qw.scale [out, n_groups]; qw.zero int [out, n_groups] or None; qw.g_idx [in] or None."""
        s = resolve_scheme(scheme)
        out_f, in_f = qw.q.shape
        if qw.g_idx is not None and s.actorder != "group":
            s = s.replace(actorder="group")
        dev = qw.q.device
        m = cls(in_f, out_f, bias=bias is not None, scheme=s, dtype=dtype, device=dev)
        m.weight_packed.copy_(pack_int32(qw.q, s.bits))
        scale = qw.scale.reshape(-1)[:1] if s.strategy == "tensor" else qw.scale
        if tuple(scale.shape) != tuple(m.weight_scale.shape):
            raise ValueError(f"scale shape mismatch: expected {tuple(m.weight_scale.shape)}, "
                             f"found {tuple(qw.scale.shape)}")
        m.weight_scale.copy_(scale.to(m.weight_scale.dtype))
        if m.weight_zero_point is not None:
            if qw.zero is None:
                raise ValueError("asymmetric scheme needs zero points, found None")
            zero = qw.zero[:1] if s.strategy == "tensor" else qw.zero
            m.weight_zero_point.copy_(pack_int32(zero.to(torch.int8), s.bits, dim=0))
        if m.weight_g_idx is not None:
            m.weight_g_idx.copy_(qw.g_idx.to(torch.int32))
        if bias is not None:
            m.bias.data.copy_(bias.to(dtype))
        return m

    # -- unpacked views (reference numerics) -----------------------------------------------
    @property
    def group_size(self) -> int:
        return self.scheme.effective_group_size(self.in_features)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unpacked scale [out, n_groups] and int8 zero [out, n_groups] or None (the tensor
        strategy's single value broadcast over rows), without unpacking the weight."""
        s = self.scheme
        if s.is_float:
            raise ValueError("qparams/qweight: a float-quantized layer has no integer qparams "
                             "(see qrt.runtime.fp_linear.float_qweight)")
        scale = self.weight_scale.reshape(1, 1).expand(self.out_features, 1) \
            if s.strategy == "tensor" else self.weight_scale
        zero = None
        if self.weight_zero_point is not None:
            rows = 1 if s.strategy == "tensor" else self.out_features
            zero = unpack_int32(self.weight_zero_point, s.bits, rows, dim=0)
            if s.strategy == "tensor":
                zero = zero.expand(self.out_features, 1)
        return scale, zero

    def qweight(self) -> QuantizedWeight:
        """The unpacked integers and qparams: q int8 [out, in], scale/zero [out, n_groups]."""
        q = unpack_int32(self.weight_packed, self.scheme.bits, self.in_features)
        return QuantizedWeight(q, *self.qparams(), self.weight_g_idx)

    def dequantize_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """fp weight [out, in] = (q - zero) * scale (in dtype, default the layer's)."""
        if self.scheme.is_float:
            return dequantize_float(self, dtype or self.dtype)
        qw = self.qweight()
        return dequantize(qw.q, qw.scale, qw.zero, self.group_size, dtype=dtype or self.dtype, g_idx=qw.g_idx)

    # -- forward ---------------------------------------------------------------------------
    def finalize(self, backend: str | None = None) -> None:
        """Repack the checkpoint buffers once for a backend of their device (Triton layout
        on CUDA, torch's packed formats on CPU), chosen by qrt.runtime.backends. Call after
        the buffers are filled (the loader does); forward calls it again if the buffers
        moved to another device, keeping the backend asked for.

        backend: None picks the fastest for the device. Weight-only layers: "dense" keeps
        the layer's own dtype end to end (the CPU packed kernels "int4pack"/"int8pack"
        compute in bfloat16, relative rounding 2^-8, because that is their only fast path),
        "triton". int8-activation layers: "triton", "int_mm" (torch, CPU), "dense" (fp32
        reference math, any device). Float (FP8/FP4) layers: "triton", "dense". A backend that
        cannot serve the layer raises ValueError naming the usable ones.
        """
        self._runtime = prepare_runtime(self, backend)
        self._backend_choice = backend
        self._runtime_device = self.weight_packed.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_runtime_device", None) != self.weight_packed.device:
            self.finalize(getattr(self, "_backend_choice", None))  # keep a chosen backend
        if self.scheme.is_float:
            return linear_float(self, x)
        if self.scheme.activations is not None:
            return linear_a8(self, x)
        return linear_a16(self, x)


def use_backend(model: nn.Module, backend: str | None) -> nn.Module:
    """Re-finalize every QuantLinear with `backend` (None: fastest for the device).
    "dense" serves every layer: weight-only ones exactly in the model dtype, int8-activation
    ones in fp32 on the dequantized weight and tokens. Weight-only layers also take
    "int4pack"/"int8pack" (torch's CPU packed kernels, bf16 math) and "triton";
    int8-activation layers "triton" and "int_mm".
    A layer the backend cannot serve raises ValueError naming it and the usable ones.
    Returns the model."""
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            try:
                m.finalize(backend=backend)
            except ValueError as e:
                raise ValueError(f"layer '{name}': {e}") from None
    return model
