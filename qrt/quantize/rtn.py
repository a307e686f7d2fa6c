"""quantize_model: round-to-nearest over a model's Linear layers, in place.

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

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from qrt.formats.targets import iter_targets, set_submodule
from qrt.runtime.embedding import QuantEmbedding, tied_head
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme, resolve_scheme

log = logging.getLogger("qrt")


@dataclass(frozen=True)
class QuantizationRecord:
    """What quantize_model did, kept on the model as `model.qrt_quantization`.

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


def storage_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """16-bit dtype a checkpoint of a `model_dtype` model is written in (fp32 -> fp16)."""
    return model_dtype if model_dtype in (torch.float16, torch.bfloat16) else torch.float16


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
        scheme = scheme.replace(scale_dtype=str(storage_dtype(module.weight.dtype)).removeprefix("torch."))
    if scheme.strategy == "group" and not ragged_groups and not scheme.is_float:
        g = divisible_group_size(scheme.group_size, module.in_features)
        if g != scheme.group_size:
            adjusted[name] = (scheme.group_size, g)
            scheme = scheme.replace(group_size=g)
    return scheme


def quantize_model(model: nn.Module, scheme: "str | QuantScheme", ignore=("lm_head",),
                   targets=("Linear",), progress: bool = True, ragged_groups: bool = False,
                   quantize_embedding: bool = False) -> nn.Module:
    """RTN-quantize every nn.Linear matching `targets` and not `ignore` (exact names, class
    names, `re:` regexes) into QuantLinear, in place; returns the model.

    An lm_head tied to the input embedding is never quantized on its own;
    quantize_embedding=True stores the embedding as int8 per row and makes the tied head
    share it. Raises ValueError naming the layer if a weight holds NaN/Inf.
    """
    scheme = resolve_scheme(scheme)
    tied = tied_output_embedding(model)
    ignore = tuple(ignore) + ((tied[0],) if tied and tied[0] not in ignore else ())
    layers = list(iter_targets(model, targets, ignore))
    adjusted: dict[str, tuple[int, int]] = {}
    for name, module in tqdm(layers, desc="Quantizing", unit="layer", disable=not progress):
        if not isinstance(module, nn.Linear):
            raise ValueError(f"target '{name}' is a {type(module).__name__}; only nn.Linear layers are "
                             "quantized (use quantize_embedding=True for the embedding)")
        _check_finite(name, module.weight)
        set_submodule(model, name, QuantLinear.from_linear(module, layer_scheme(scheme, name, module,
                                                                                ragged_groups, adjusted)))
    for name, (req, used) in adjusted.items():
        log.info("%s: group size %d does not divide in_features; using %d", name, req, used)
    emb_name = _quantize_embedding(model, tied) if quantize_embedding else None
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    model.qrt_quantization = QuantizationRecord(
        scheme=scheme, targets=tuple(targets), ignore=ignore, adjusted=adjusted,
        quantized_embedding=emb_name, tied_head=tied[0] if tied else None,
        storage_dtype=storage_dtype(dtype))
    return model


def _check_finite(name: str, w: torch.Tensor) -> None:
    bad = ~torch.isfinite(w)
    if bad.any():
        idx = bad.nonzero()[0].tolist()
        raise ValueError(f"layer '{name}': weight {list(w.shape)} holds {int(bad.sum())} NaN/Inf "
                         f"value(s), first at {idx} ({w[tuple(idx)].item()}); expected finite weights")


def _quantize_embedding(model: nn.Module, tied: tuple[str, str] | None) -> str:
    emb = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is emb)
    _check_finite(name, emb.weight)
    qemb = QuantEmbedding.from_embedding(emb, storage_dtype(emb.weight.dtype))
    set_submodule(model, name, qemb)
    if tied:
        head = model.get_submodule(tied[0])
        set_submodule(model, tied[0], tied_head(qemb, getattr(head, "bias", None)))
    return name
