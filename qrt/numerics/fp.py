"""Round-to-nearest FP8 (e4m3) and FP4 (e2m1) weight quantization, as compressed-tensors
and llmcompressor define it, so a checkpoint means the same thing to every reader.

  FP8 per channel:  scale[n] = max|W[n]| / 448;  q = fp8(clamp(W / scale, ±448))
  NVFP4 (group 16): global = 448 * 6 / max|W| (fp32 [1]);
                    scale[n, g] = fp8_e4m3(max|W[n, g]| / 6 * global);
                    q = e2m1(W / (fp32(scale) / global));  w_hat = q * fp32(scale) / global
  MXFP4 (group 32): e = floor(log2(round_pow2(max|W[n, g]|))) - 2 + 127 (uint8, e8m0);
                    q = e2m1(W / 2^(e-127))
  NVFP4 activations (W4A4, fake-quant; compressed-tensors' dynamic "local" tensor_group):
                    gs = input_global_scale (calibrated, stored as 448 * 6 / max|x|);
                    scale[.., g] = fp8_e4m3(max|x[.., g]| / 6 * gs)  (0 -> e4m3 eps 2^-3);
                    x_hat = e2m1(x / (fp32(scale) / gs)) * (fp32(scale) / gs)
e2m1 rounds to nearest, ties to even (compressed-tensors' cast_to_fp4 thresholds); FP8
casts round to nearest even. FP4 codes are packed two per uint8, even column in the low
nibble. Dequantization is the kernel twins' (qrt_kernels.reference).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qrt.numerics.quant import check_finite
from qrt_kernels.reference import FP8_E4M3_MAX, e2m1_to_float, fp4_dequant_weight

E2M1_MAX = 6.0
E8M0_BIAS = 127
E4M3_EPS = torch.finfo(torch.float8_e4m3fn).eps  # 0.125: compressed-tensors' stand-in for a zero scale
# |x| thresholds between neighbouring e2m1 magnitudes; ">" for ties that go down to the even
# neighbour, ">=" for ties that go up (0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4)
_E2M1_UP = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))


@dataclass(frozen=True)
class FloatQuantizedWeight:
    """Checkpoint-layout tensors of one float-quantized weight [out, in].

    FP8:   codes float8_e4m3fn [out, in]; scale fp32/16-bit [out, 1] (channel) or [1] (tensor)
    NVFP4: codes uint8 [out, in/2] (packed e2m1); scale float8_e4m3fn [out, in/16];
           global_scale fp32 [1]
    MXFP4: codes uint8 [out, in/2]; scale uint8 (e8m0) [out, in/32]; global_scale None
    """

    codes: torch.Tensor
    scale: torch.Tensor
    global_scale: torch.Tensor | None = None


def quantize_fp8(w: torch.Tensor, per_channel: bool = True,
                 scale_dtype: torch.dtype = torch.float32) -> FloatQuantizedWeight:
    """w [out, in] -> FP8 e4m3 codes and scales (absmax / 448, rounded to scale_dtype first,
    so dividing by the stored scale is what a reader undoes)."""
    check_finite(w)
    wf = w.float()
    amax = wf.abs().amax(dim=1, keepdim=True) if per_channel else wf.abs().amax().reshape(1)
    scale = (amax / FP8_E4M3_MAX).to(scale_dtype)
    scale = torch.where(scale > 0, scale, torch.full_like(scale, torch.finfo(scale_dtype).tiny))
    s = scale.float() if per_channel else scale.float().reshape(1, 1)
    return FloatQuantizedWeight(fp8_codes(wf, s), scale.contiguous())


def fp8_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """w / scale (float32, scale broadcast against w), saturated at ±448, rounded to the
    nearest e4m3 value (ties to even): the one FP8 rounding RTN and GPTQ share."""
    return (w.float() / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """float32 x (already divided by its scale) -> e2m1 codes uint8 (bit 3 sign), |x|
    saturating at 6, round to nearest with ties to even."""
    a = x.abs()
    idx = torch.zeros_like(a, dtype=torch.uint8)
    for t, inclusive in _E2M1_UP:
        idx += (a >= t if inclusive else a > t).to(torch.uint8)
    sign = torch.signbit(x).to(torch.uint8) << 3
    return idx | sign


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 codes uint8 [N, K] (K even) -> uint8 [N, K/2], column 2j in the low nibble."""
    n, k = codes.shape
    if k % 2:
        raise ValueError(f"FP4 packing needs an even number of columns, found {k}")
    pairs = codes.reshape(n, k // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).contiguous()


def _group_absmax(w: torch.Tensor, group_size: int, what: str) -> torch.Tensor:
    out_f, in_f = w.shape
    if in_f % group_size:
        raise ValueError(f"{what} needs in_features divisible by its group size {group_size}, "
                         f"found weight shape {list(w.shape)}")
    return w.float().abs().reshape(out_f, in_f // group_size, group_size).amax(dim=2)


def _fp4_codes(w: torch.Tensor, group_scale: torch.Tensor, group_size: int) -> torch.Tensor:
    s = group_scale.repeat_interleave(group_size, dim=1)
    return pack_fp4(e2m1_codes(w.float() / s))


def quantize_nvfp4(w: torch.Tensor, group_size: int = 16) -> FloatQuantizedWeight:
    """w [out, in] -> NVFP4 packed codes, e4m3 group scales and the fp32 global scale."""
    check_finite(w)
    amax = _group_absmax(w, group_size, "NVFP4")
    tensor_max = amax.amax().clamp(min=torch.finfo(torch.float32).tiny)
    global_scale = (FP8_E4M3_MAX * E2M1_MAX / tensor_max).reshape(1).float()
    if not torch.isfinite(global_scale).all():
        global_scale = torch.ones(1)
    scale = (amax / E2M1_MAX * global_scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    eps = torch.tensor(torch.finfo(torch.float8_e4m3fn).eps, dtype=torch.float8_e4m3fn)
    scale = torch.where(scale.float() == 0, eps, scale)  # an all-zero group: q = 0, no 0/0
    codes = _fp4_codes(w, scale.float() / global_scale, group_size)
    return FloatQuantizedWeight(codes, scale.contiguous(), global_scale)


def mx_exponent(amax: torch.Tensor) -> torch.Tensor:
    """Per-group max |w| (fp32) -> e8m0 exponent uint8: amax rounded to a power of two
    (mantissas >= 1.75 round up: compressed-tensors' round_to_power_2 for e2m1), minus
    e2m1's emax 2, plus the bias 127. A zero group gets the smallest exponent."""
    bits = amax.float().view(torch.int32)
    pow2 = ((bits + (1 << 21)) & 0x7F800000).view(torch.float32)
    e = torch.floor(torch.log2(pow2)) - 2 + E8M0_BIAS
    return torch.nan_to_num(e, neginf=0.0).clamp(0, 254).to(torch.uint8)


def quantize_mxfp4(w: torch.Tensor, group_size: int = 32) -> FloatQuantizedWeight:
    """w [out, in] -> MXFP4 packed codes and e8m0 group scales (uint8)."""
    check_finite(w)
    e = mx_exponent(_group_absmax(w, group_size, "MXFP4"))
    codes = _fp4_codes(w, torch.exp2(e.float() - E8M0_BIAS), group_size)
    return FloatQuantizedWeight(codes, e.contiguous())


def dequantize_fp8(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp8 codes [out, in] * scale ([out, 1] or [1]) in float32, cast to dtype."""
    s = scale.float().reshape(-1, 1) if scale.numel() > 1 else scale.float().reshape(1, 1)
    return (codes.float() * s).to(dtype)


def dequantize_fp4(qw: FloatQuantizedWeight, group_size: int, in_features: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """Packed FP4 -> W [out, in] in dtype (NVFP4 when qw.global_scale is set, else MXFP4)."""
    return fp4_dequant_weight(qw.codes, qw.scale, qw.global_scale, group_size, in_features, dtype)


def fake_quant_nvfp4_act(x: torch.Tensor, global_scale: torch.Tensor, group_size: int = 16) -> torch.Tensor:
    """NVFP4 activation quantize-dequantize, as compressed-tensors' forward_quantize does it
    for dynamic "local" tensor_group input activations (the W4A4 scheme vLLM serves):
    x [..., K] (K a multiple of group_size); global_scale fp32 [1], the checkpoint's
    `input_global_scale` (a multiplier: 448 * 6 / calibrated max|x|). Per group of
    `group_size` along the last dim: scale = e4m3(max|x| / 6 * global_scale) (saturating
    at 448; a zero scale becomes e4m3's eps), values e2m1-rounded (ties to even, saturating
    at 6) at x / (scale / global_scale) and multiplied back, in float32. Returns x.dtype.

    max|x| / 6 is divided in x.dtype, as compressed-tensors does (for bf16/fp16 inputs that
    rounding moves a group scale by one e4m3 step now and then; vLLM's CUDA quantizer works
    in float32 and so differs from compressed-tensors there; both agree on float32 inputs)."""
    k = x.shape[-1]
    if k % group_size:
        raise ValueError(f"NVFP4 activations: last dim {k} is not a multiple of the group size {group_size}")
    g = x.unflatten(-1, (k // group_size, group_size))
    gs = global_scale.float().reshape(1)
    amax = g.abs().amax(dim=-1, keepdim=True)
    scale = ((amax / E2M1_MAX).float() * gs).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).float()
    scale = torch.where(scale == 0, torch.full_like(scale, E4M3_EPS), scale) / gs
    return (e2m1_to_float(e2m1_codes(g.float() / scale)) * scale).flatten(-2).to(x.dtype)
