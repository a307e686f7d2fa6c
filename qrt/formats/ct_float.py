"""compressed-tensors tensors of one float-quantized layer (FP8 float-quantized, NVFP4 and
MXFP4 pack-quantized): write (QuantLinear -> checkpoint tensors) and read back.

  float-quantized       weight float8_e4m3fn [out, in]; weight_scale [out, 1] (channel) or
                        [1] (tensor); no input_scale (dynamic per-token FP8 activations)
  nvfp4-pack-quantized  weight_packed uint8 [out, in/2]; weight_scale float8_e4m3fn
                        [out, in/16]; weight_global_scale float32 [1]; with NVFP4
                        activations (W4A4) also input_global_scale float32 [1]
  mxfp4-pack-quantized  weight_packed uint8 [out, in/2]; weight_scale uint8 [out, in/32]
No weight_shape: compressed-tensors' FP4 compressors neither write nor accept one.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from qrt.schemes import FLOAT_DTYPES, QuantScheme

_FLOATS = tuple(FLOAT_DTYPES.values())


def float_layer_tensors(layer) -> dict[str, torch.Tensor]:
    """A float QuantLinear's checkpoint tensors (local names)."""
    if layer.scheme.bits == 8:
        return {"weight": layer.weight_packed, "weight_scale": layer.weight_scale}
    out = {"weight_packed": layer.weight_packed, "weight_scale": layer.weight_scale}
    if layer.weight_global_scale is not None:
        out["weight_global_scale"] = layer.weight_global_scale
    if layer.input_global_scale is not None:
        out["input_global_scale"] = layer.input_global_scale
    return out


def _get(get_tensor, name: str, shapes: tuple, dtypes: tuple, what: str) -> torch.Tensor:
    """The tensor `name`, checked against the accepted shapes (first one canonical) and dtypes."""
    try:
        t = get_tensor(name)
    except KeyError:
        raise ValueError(f"tensor '{name}' ({what}) is missing from the checkpoint") from None
    if tuple(t.shape) not in [tuple(s) for s in shapes] or t.dtype not in dtypes:
        want = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"tensor '{name}' ({what}): expected {want} {list(shapes[0])}, "
                         f"found {str(t.dtype).removeprefix('torch.')} {list(t.shape)}")
    return t.reshape(shapes[0])


def read_float_layer(get_tensor: Callable[[str], torch.Tensor], prefix: str, s: QuantScheme,
                     in_f: int, out_f: int) -> tuple[QuantScheme, dict[str, torch.Tensor]]:
    """-> (scheme, QuantLinear buffers) of a float-quantized layer; ValueError naming the
    tensor, the expected and the found shape/dtype."""
    if s.bits == 8:
        w = _get(get_tensor, f"{prefix}.weight", [(out_f, in_f)], (torch.float8_e4m3fn,), "FP8 e4m3 weight")
        shapes = [(1,), (), (1, 1)] if s.strategy == "tensor" else [(out_f, 1), (out_f,)]
        scale = _get(get_tensor, f"{prefix}.weight_scale", shapes, _FLOATS, f"FP8 per-{s.strategy} scale")
        dtype = next(k for k, v in FLOAT_DTYPES.items() if v == scale.dtype)
        return s.replace(scale_dtype=dtype), {"weight_packed": w, "weight_scale": scale}
    if in_f % s.group_size:
        raise ValueError(f"module '{prefix}': in_features {in_f} is not a multiple of the FP4 group size {s.group_size}")
    nvfp4 = s.strategy == "tensor_group"
    bufs = {"weight_packed": _get(get_tensor, f"{prefix}.weight_packed", [(out_f, in_f // 2)], (torch.uint8,),
                                  "FP4 e2m1 codes, two per byte"),
            "weight_scale": _get(get_tensor, f"{prefix}.weight_scale", [(out_f, in_f // s.group_size)],
                                 (torch.float8_e4m3fn,) if nvfp4 else (torch.uint8,),
                                 "NVFP4 e4m3 group scales" if nvfp4 else "MXFP4 e8m0 group scales")}
    if nvfp4:
        bufs["weight_global_scale"] = _get(get_tensor, f"{prefix}.weight_global_scale", [(1,), ()],
                                           (torch.float32,), "NVFP4 global scale").float()
    if s.activations is not None:  # NVFP4 activations: the calibrated multiplier 448 * 6 / max|x|
        bufs["input_global_scale"] = _get(get_tensor, f"{prefix}.input_global_scale", [(1,), ()],
                                          (torch.float32,), "NVFP4 activation global scale").float()
    return s, bufs
