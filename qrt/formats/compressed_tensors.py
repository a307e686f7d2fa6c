"""compressed-tensors tensors of one quantized layer: write (QuantLinear -> checkpoint
tensors) and read (checkpoint tensors -> QuantLinear buffers).

pack-quantized: weight_packed int32 [out, ceil(in*b/32)], weight_scale, weight_shape int64 [2],
  weight_zero_point int32 [ceil(out*b/32), n_groups] (asymmetric), weight_g_idx int32 [in].
int-quantized / naive-quantized: weight int8 [out, in] unpacked, weight_scale,
  weight_zero_point int8 [out, n_groups] unpacked (asymmetric), input_scale [1] (static act).

QuantLinear always holds `weight_packed`; for 8 bits the packed words are the same bytes as
(q + 128) as uint8, so int-quantized conversion is a byte view and an XOR.

`read_layer` / `is_quantized_layer` have the same signature as the GPTQ and AWQ readers
(qrt.formats.gptq / qrt.formats.awq) so the loader loop is shared.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from qrt.formats.ct_config import (FLOAT_FORMATS, INT_QUANTIZED, NAIVE_QUANTIZED, SUPPORTED, find_group,
                                   group_format, scheme_from_group)
from qrt.formats.ct_float import float_layer_tensors, read_float_layer
from qrt.numerics.packing import int8_to_packed8, pack_int32, packed8_to_int8, packed_words, unpack_int32
from qrt.schemes import FLOAT_DTYPES, QuantScheme, dtype_name

_FLOAT_DTYPES = tuple(FLOAT_DTYPES.values())


# -- writing ------------------------------------------------------------------------------------
def layer_tensors(layer, fmt: str) -> dict[str, torch.Tensor]:
    """A QuantLinear's checkpoint tensors (local names) in format `fmt`."""
    s = layer.scheme
    if fmt in FLOAT_FORMATS:
        return float_layer_tensors(layer)
    if fmt in (INT_QUANTIZED, NAIVE_QUANTIZED):
        if s.bits != 8:
            raise ValueError(f"{fmt} stores int8 weights; found a {s.bits}-bit layer")
        out = {"weight": packed8_to_int8(layer.weight_packed, layer.in_features),
               "weight_scale": layer.weight_scale}
        if layer.weight_zero_point is not None:
            rows = 1 if s.strategy == "tensor" else layer.out_features
            out["weight_zero_point"] = unpack_int32(layer.weight_zero_point, 8, rows, dim=0)
    else:
        out = {"weight_packed": layer.weight_packed, "weight_scale": layer.weight_scale,
               "weight_shape": layer.weight_shape}
        if layer.weight_zero_point is not None:
            out["weight_zero_point"] = layer.weight_zero_point
    if layer.weight_g_idx is not None:
        out["weight_g_idx"] = layer.weight_g_idx
    if layer.input_scale is not None:
        out["input_scale"] = layer.input_scale
    return out


# -- reading ------------------------------------------------------------------------------------
def _expect(name: str, t: torch.Tensor, shape: tuple, dtypes: tuple, why: str = "") -> torch.Tensor:
    if tuple(t.shape) != tuple(shape) or t.dtype not in dtypes:
        want = "/".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"tensor '{name}': expected {want} {list(shape)}{why}, "
                         f"found {str(t.dtype).removeprefix('torch.')} {list(t.shape)}")
    return t


def is_quantized_layer(prefix: str, tensor_names) -> bool:
    """True if the checkpoint holds compressed tensors for module `prefix`."""
    names = set(tensor_names)
    return f"{prefix}.weight_packed" in names or f"{prefix}.weight_scale" in names


def layer_scheme(prefix: str, quant_config: dict, class_names=("Linear",)) -> tuple[QuantScheme, str] | None:
    """(scheme, format) of the config group claiming `prefix`, or None if unquantized."""
    gname = find_group(prefix, list(class_names), quant_config)
    if gname is None:
        return None
    fmt = group_format(quant_config, gname, prefix)
    try:
        scheme = scheme_from_group(quant_config["config_groups"][gname], f"config_groups.{gname}")
    except ValueError as e:
        raise ValueError(f"layer '{prefix}' (format {fmt!r}): {e}. qrt reads {SUPPORTED}") from None
    if scheme.is_float != (fmt in FLOAT_FORMATS):
        raise ValueError(f"layer '{prefix}': format {fmt!r} does not hold {scheme.type} weights "
                         f"(config group '{gname}'); qrt reads {SUPPORTED}")
    return scheme, fmt


def read_layer(get_tensor: Callable[[str], torch.Tensor], prefix: str, quant_config: dict,
               in_features: int, out_features: int, class_names=("Linear",)
               ) -> tuple[QuantScheme, dict[str, torch.Tensor]]:
    """Checkpoint tensors of `prefix` -> (scheme, QuantLinear buffers: weight_packed,
    weight_scale, weight_zero_point?, weight_g_idx?, input_scale?). Raises ValueError naming
    the tensor, the expected and the found shape/dtype."""
    found = layer_scheme(prefix, quant_config, class_names)
    if found is None:
        raise ValueError(f"module '{prefix}' has compressed tensors but no config group targets it "
                         "(or `ignore` lists it)")
    s, fmt = found
    if fmt in FLOAT_FORMATS:
        return read_float_layer(get_tensor, prefix, s, in_features, out_features)
    scale = get_tensor(f"{prefix}.weight_scale")
    s = s.replace(scale_dtype=dtype_name(scale.dtype) if scale.dtype in _FLOAT_DTYPES else None)
    n_groups = s.num_groups(in_features)
    why = f" for group_size {s.group_size}, in_features {in_features}" if s.strategy == "group" else ""
    scale_shape = (1,) if s.strategy == "tensor" else (out_features, n_groups)
    if s.strategy == "tensor" and tuple(scale.shape) in ((1, 1), ()):
        scale = scale.reshape(1)
    buf = {"weight_scale": _expect(f"{prefix}.weight_scale", scale, scale_shape, _FLOAT_DTYPES, why)}
    zp_rows = 1 if s.strategy == "tensor" else out_features
    if fmt in (INT_QUANTIZED, NAIVE_QUANTIZED):
        _read_unpacked(get_tensor, prefix, s, in_features, out_features, zp_rows, scale_shape, buf)
    else:
        _read_packed(get_tensor, prefix, s, in_features, out_features, zp_rows, buf)
    if s.actorder == "group":
        buf["weight_g_idx"] = _expect(f"{prefix}.weight_g_idx", get_tensor(f"{prefix}.weight_g_idx"),
                                      (in_features,), (torch.int32, torch.int64)).to(torch.int32)
    if s.activations is not None and not s.activations.dynamic:
        buf["input_scale"] = _expect(f"{prefix}.input_scale", get_tensor(f"{prefix}.input_scale").reshape(-1),
                                     (1,), _FLOAT_DTYPES).float()
    return s, buf


def _read_packed(get_tensor, prefix, s, in_f, out_f, zp_rows, buf) -> None:
    buf["weight_packed"] = _expect(f"{prefix}.weight_packed", get_tensor(f"{prefix}.weight_packed"),
                                   (out_f, packed_words(in_f, s.bits)), (torch.int32,),
                                   f" ({s.bits}-bit, in_features {in_f})")
    shape = get_tensor(f"{prefix}.weight_shape")
    if shape.numel() != 2 or shape.tolist() != [out_f, in_f]:
        raise ValueError(f"tensor '{prefix}.weight_shape': expected [{out_f}, {in_f}] (the model "
                         f"config's layer shape), found {shape.tolist()}")
    if not s.symmetric:
        n_zp_cols = buf["weight_scale"].shape[-1] if s.strategy != "tensor" else 1
        buf["weight_zero_point"] = _expect(
            f"{prefix}.weight_zero_point", get_tensor(f"{prefix}.weight_zero_point"),
            (packed_words(zp_rows, s.bits), n_zp_cols), (torch.int32,), " (packed along dim 0)")


def _read_unpacked(get_tensor, prefix, s, in_f, out_f, zp_rows, scale_shape, buf) -> None:
    if s.bits != 8:
        raise ValueError(f"module '{prefix}': int-quantized stores int8 weights, but its config "
                         f"group says num_bits={s.bits}")
    q = _expect(f"{prefix}.weight", get_tensor(f"{prefix}.weight"), (out_f, in_f), (torch.int8,))
    buf["weight_packed"] = int8_to_packed8(q)
    if not s.symmetric:
        zp = get_tensor(f"{prefix}.weight_zero_point")
        zp = _expect(f"{prefix}.weight_zero_point", zp.reshape(zp_rows, -1),
                     (zp_rows, scale_shape[-1] if s.strategy != "tensor" else 1), (torch.int8,))
        buf["weight_zero_point"] = pack_int32(zp, 8, dim=0)
