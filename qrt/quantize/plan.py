"""The one planner of every quantization method (RTN, GPTQ, QAT): which Linear layers are
quantized, with which per-layer scheme, and the QuantizationRecord each method leaves on
the model (`model.qrt_quantization`, what save_quantized writes), so every method saves the
same way.

Two decisions are taken here, at quantization time, so the in-memory model is exactly what
save_quantized writes and load_quantized reads back (nothing is requantized at save):

* Group size vs in_features. compressed-tensors' decompressor and vLLM need the group size
  to divide in_features (SmolLM2: 576 columns, g128 does not). By default such a layer is
  quantized with the largest power-of-two group size dividing its in_features (576 -> 64),
  recorded in `QuantizationRecord.adjusted` and written as its own config group.
  `ragged_groups=True` keeps the requested size with a ragged last group (qrt-only files).
* Scale dtype. Checkpoints are 16-bit: scales of an fp32 model are rounded to fp16 before
  the integers are computed (a bf16/fp16 model keeps its own dtype), unless the scheme
  names a scale_dtype.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from qrt.formats.targets import iter_targets
from qrt.schemes import QuantScheme, dtype_name, storage_dtype


@dataclass(frozen=True)
class QuantizationRecord:
    """What a quantization method did, kept on the model as `model.qrt_quantization`.

    scheme: the requested scheme. adjusted: {layer name: (requested, used) group size}.
    tied_head: name of an lm_head sharing the input embedding (never quantized on its own).
    storage_dtype: dtype save_quantized writes non-quantized float tensors in.
    """

    scheme: QuantScheme
    targets: tuple[str, ...]
    ignore: tuple[str, ...]
    adjusted: dict = field(default_factory=dict)
    quantized_embedding: str | None = None
    tied_head: str | None = None
    storage_dtype: torch.dtype = torch.float16
    method: str = "rtn"


def record_quantization(model: nn.Module, method: str, scheme: QuantScheme, targets: Sequence[str],
                        ignore: Sequence[str], adjusted: dict, tied_head: str | None,
                        quantized_embedding: str | None = None) -> QuantizationRecord:
    """The record of a method's run on `model`; its storage dtype follows the model's
    float parameters as they are now (fp16/bf16 kept, fp32 -> fp16)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return QuantizationRecord(scheme=scheme, targets=tuple(targets), ignore=tuple(ignore), adjusted=adjusted,
                              quantized_embedding=quantized_embedding, tied_head=tied_head,
                              storage_dtype=storage_dtype(dtype), method=method)


def divisible_group_size(group_size: int, in_features: int) -> int:
    """The requested size if it divides in_features, else the largest power of two that
    divides in_features (never larger than the request)."""
    if in_features % group_size == 0:
        return group_size
    g = in_features & -in_features  # lowest set bit = largest power-of-two divisor
    while g > group_size:
        g //= 2
    return g


def tied_output_embedding(model: nn.Module) -> tuple[str, str] | None:
    """(lm_head name, embedding name) if the output projection shares the input embedding."""
    get_in, get_out = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return None
    emb, head = get_in(), get_out()
    if emb is None or head is None or getattr(head, "weight", None) is not getattr(emb, "weight", 0):
        return None
    names = {id(m): n for n, m in model.named_modules()}
    return names[id(head)], names[id(emb)]


def layer_scheme(scheme: QuantScheme, name: str, module: nn.Linear, ragged_groups: bool,
                 adjusted: dict) -> QuantScheme:
    """The scheme one layer gets: scale dtype fixed, group size adjusted if needed. FP8
    scales are 16-bit like the int ones (llmcompressor writes the model dtype; a reader that
    builds scale parameters in the model dtype then holds them exactly); FP4 scales and
    groups are part of the format."""
    if scheme.is_float and scheme.bits == 4:
        if module.in_features % scheme.group_size:
            raise ValueError(f"layer '{name}': in_features {module.in_features} is not a multiple of the "
                             f"FP4 group size {scheme.group_size}; exclude it with ignore=[...]")
        return scheme
    if scheme.scale_dtype is None:
        scheme = scheme.replace(scale_dtype=dtype_name(storage_dtype(module.weight.dtype)))
    if scheme.strategy == "group" and not ragged_groups and not scheme.is_float:
        g = divisible_group_size(scheme.group_size, module.in_features)
        if g != scheme.group_size:
            adjusted[name] = (scheme.group_size, g)
            scheme = scheme.replace(group_size=g)
    return scheme


def plan_layers(model: nn.Module, scheme: QuantScheme, targets: Sequence[str] = ("Linear",),
                ignore: Sequence[str] = ("lm_head",), ragged_groups: bool = False):
    """-> (plan {name: (Linear, layer scheme)}, adjusted {name: (requested, used) group size},
    the final ignore tuple, tied (lm_head name, embedding name) or None).

    Layer schemes get 16-bit scales and, unless ragged_groups, a group size dividing
    in_features; an lm_head tied to the input embedding is added to ignore."""
    tied = tied_output_embedding(model)
    ignore = tuple(ignore) + ((tied[0],) if tied and tied[0] not in ignore else ())
    adjusted: dict[str, tuple[int, int]] = {}
    plan = {}
    for name, module in iter_targets(model, targets, ignore):
        if not isinstance(module, nn.Linear):
            raise ValueError(f"target '{name}' is a {type(module).__name__}; expected nn.Linear "
                             "(adjust targets/ignore; RTN quantizes the embedding with quantize_embedding=True)")
        plan[name] = (module, layer_scheme(scheme, name, module, ragged_groups, adjusted))
    return plan, adjusted, ignore, tied
