"""What a quantized model looks like on disk: its tensors (compressed-tensors names) and
its `quantization_config`, derived from the modules themselves (QuantLinear schemes), so
models quantized by any path (RTN, GPTQ, QAT) save the same way.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from qrt.formats.compressed_tensors import layer_tensors
from qrt.formats.ct_config import PACK_QUANTIZED, config_group, layer_format, quantization_config
from qrt.runtime.embedding import QuantEmbedding
from qrt.runtime.linear import QuantLinear


def _is_tied_head(m: nn.Module) -> bool:
    return getattr(m, "tied_to_embedding", False)


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, format) of every layer stored compressed, in model order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, QuantEmbedding):
            out.append((name, m, PACK_QUANTIZED))
        elif isinstance(m, QuantLinear) and not _is_tied_head(m):
            out.append((name, m, layer_format(m.scheme)))
    return out


def ragged_layers(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, group_size, in_features) of layers whose group size does not divide in_features."""
    return [(n, m.scheme.group_size, m.in_features) for n, m, _ in quantized_layers(model)
            if isinstance(m, QuantLinear) and m.scheme.strategy == "group"
            and m.in_features % m.scheme.group_size]


def checkpoint_tensors(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Flat {name: tensor}: compressed tensors of quantized layers, every other parameter and
    persistent buffer with floats cast to `dtype`. A tensor shared by several names (tied
    embeddings) is written once, under its first name."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}  # id -> tensor, held so ids of temporaries are never reused

    def put(key: str, t: torch.Tensor, cast: bool) -> None:
        if id(t) in seen:
            return
        seen[id(t)] = t
        t = t.detach()
        if cast and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous()

    formats = {id(m): f for _, m, f in quantized_layers(model)}
    for name, m in model.named_modules():
        pre = f"{name}." if name else ""
        if id(m) in formats:
            for k, t in layer_tensors(m, formats[id(m)]).items() if isinstance(m, QuantLinear) \
                    else _embedding_tensors(m).items():
                put(pre + k, t, cast=False)
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            if _is_tied_head(m):
                for t in (m.weight_packed, m.weight_scale, m.weight_shape):
                    seen[id(t)] = t
            if getattr(m, "bias", None) is not None:
                put(pre + "bias", m.bias, cast=True)
            continue
        for k, p in m._parameters.items():
            if p is not None:
                put(pre + k, p, cast=True)
        for k, b in m._buffers.items():
            if b is not None and k not in m._non_persistent_buffers_set:
                put(pre + k, b, cast=True)
    return out


def _embedding_tensors(m: QuantEmbedding) -> dict[str, torch.Tensor]:
    return {"weight_packed": m.weight_packed, "weight_scale": m.weight_scale, "weight_shape": m.weight_shape}


def build_quantization_config(model: nn.Module, main_scheme=None) -> dict:
    """config.json `quantization_config`: one config group per distinct (scheme, format).

    The group of `main_scheme` (else the most common one) targets the class "Linear" and
    comes last; the others (adjusted group sizes, a quantized embedding) list exact module names, which
    win over class targets in compressed-tensors and vLLM. `ignore` lists every nn.Linear
    left unquantized (e.g. lm_head), so class targeting never claims it.
    """
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model has no quantized layers; run qrt.quantize_model first")
    key = {id(m): (m.scheme.replace(scale_dtype=None), f, isinstance(m, QuantEmbedding)) for _, m, f in layers}
    counts = Counter(k for k in key.values() if not k[2])
    main = next((k for k in counts if main_scheme is not None and k[0] == main_scheme.replace(scale_dtype=None)),
                counts.most_common(1)[0][0] if counts else None)
    names: dict[tuple, list[str]] = {}
    for n, m, _ in layers:
        names.setdefault(key[id(m)], []).append(n)
    groups = {}
    # exact-name groups first: compressed-tensors' matcher credits a module to the first
    # target it meets and warns about "unmatched" targets otherwise (precedence is by kind)
    for i, (k, ns) in enumerate(sorted(names.items(), key=lambda kv: kv[0] == main)):
        groups[f"group_{i}"] = config_group(k[0], ["Linear"] if k == main else ns, k[1])
    ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or _is_tied_head(m)]
    return quantization_config(groups, ignore)
