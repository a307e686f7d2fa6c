"""quantize_model: round-to-nearest over a model's Linear layers, in place, with the layer
plan every method shares (qrt.quantize.plan: which layers, group sizes, scale dtypes)."""
from __future__ import annotations

import logging

from torch import nn
from tqdm.auto import tqdm

from qrt.formats.targets import set_submodule
from qrt.numerics.quant import NonFiniteError
from qrt.quantize.plan import plan_layers, record_quantization
from qrt.runtime.embedding import QuantEmbedding, tied_head
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme, resolve_scheme, storage_dtype

log = logging.getLogger("qrt")


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
    plan, adjusted, ignore, tied = plan_layers(model, scheme, targets, ignore, ragged_groups)
    for name, (module, layer_s) in tqdm(plan.items(), desc="Quantizing", unit="layer", disable=not progress):
        set_submodule(model, name, _named(name, QuantLinear.from_linear, module, layer_s))
    for name, (req, used) in adjusted.items():
        log.info("%s: group size %d does not divide in_features; using %d", name, req, used)
    emb_name = _quantize_embedding(model, tied) if quantize_embedding else None
    model.qrt_quantization = record_quantization(model, "rtn", scheme, targets, ignore, adjusted,
                                                 tied[0] if tied else None, quantized_embedding=emb_name)
    return model


def _named(name: str, quantize, *args):
    """quantize(*args), a NaN/Inf in the weight reported with the layer's name."""
    try:
        return quantize(*args)
    except NonFiniteError as e:
        raise ValueError(f"layer '{name}': weight {list(e.shape)} holds {e.count} NaN/Inf value(s), "
                         f"first at {e.index} ({e.value}); expected finite weights") from None


def _quantize_embedding(model: nn.Module, tied: tuple[str, str] | None) -> str:
    emb = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is emb)
    qemb = _named(name, QuantEmbedding.from_embedding, emb, storage_dtype(emb.weight.dtype))
    set_submodule(model, name, qemb)
    if tied:
        head = model.get_submodule(tied[0])
        set_submodule(model, tied[0], tied_head(qemb, getattr(head, "bias", None)))
    return name
