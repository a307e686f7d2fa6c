"""Static activation calibration: fill `input_scale` of every static-scheme QuantLinear.

As llmcompressor does it: an observer per layer, fed by a forward pre-hook while the
calibration batches run through the model; each hook writes the observer's current scale
into `input_scale` before the layer's own forward, so later layers calibrate on the
quantized outputs of earlier ones. The hooks are removed when the scales are frozen
(also on error). Dynamic schemes need none of this and stay the default.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from qrt.quantize.observers import Observer, ObserverConfig, make_observer
from qrt.runtime.backends import choose_backend, usable_backends
from qrt.runtime.linear import QuantLinear

# int8-activation backends whose output is rounded (int8pack_a8: bfloat16) -> the exact one
# calibration runs instead, so later layers observe what the int32 math gives
ROUNDING_A8_BACKENDS = {"int8pack_a8": "int_mm"}


def static_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """name -> QuantLinear whose scheme quantizes activations statically."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, QuantLinear) and m.scheme.activations is not None
            and not m.scheme.activations.dynamic}


def _observe_hook(observer: Observer):
    def hook(layer: QuantLinear, args):
        observer.update(args[0])
        layer.input_scale.copy_(observer.scale().to(layer.input_scale.device))
    return hook


def _run_batch(model: nn.Module, batch) -> None:
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


def _exact_a8_backends(model: nn.Module) -> list[tuple[QuantLinear, str | None]]:
    """Put int8-activation layers that run a rounding backend on the exact one for calibration
    (as GPTQ calibrates weight-only blocks on the dense backend); returns (layer, its backend
    choice) to restore."""
    switched = []
    for m in model.modules():
        if not isinstance(m, QuantLinear) or m.scheme.activations is None:
            continue
        choice = getattr(m, "_backend_choice", None)  # what forward would build (lazily) or has built
        exact = ROUNDING_A8_BACKENDS.get(choose_backend(m, choice).name)
        if exact is not None and exact in usable_backends(m):
            switched.append((m, choice))
            m.finalize(backend=exact)
    return switched


@torch.no_grad()
def calibrate_input_scales(model: nn.Module, batches: Iterable,
                           observer: "str | ObserverConfig | None" = None,
                           progress: bool = True) -> dict[str, float]:
    """Run `batches` through `model` and freeze every static layer's `input_scale`.

    batches: tensors (model(batch)), tuples (model(*batch)) or dicts (model(**batch)).
    observer: name or ObserverConfig for every layer; None uses each layer's
      scheme.activations.observer ("minmax" by default).
    Returns {layer name: scale}. ValueError if the model has no static layer, a layer
    never ran, or an activation was non-finite.
    """
    layers = static_layers(model)
    if not layers:
        raise ValueError("no QuantLinear with a static activation scheme (e.g. 'w8a8-static') "
                         "found in the model")
    observers = {name: make_observer(observer if observer is not None else m.scheme.activations.observer)
                 for name, m in layers.items()}
    handles = [m.register_forward_pre_hook(_observe_hook(observers[name])) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    switched = _exact_a8_backends(model)
    try:
        for batch in tqdm(batches, desc="calibrating input scales", disable=not progress):
            _run_batch(model, batch)
    finally:
        for h in handles:
            h.remove()
        for layer, choice in switched:  # back to the backend each layer had
            layer.finalize(backend=choice)
        model.train(was_training)
    missed = [name for name, obs in observers.items() if obs.batches == 0]
    if missed:
        raise ValueError(f"static layers never ran during calibration: {missed}")
    return {name: float(m.input_scale) for name, m in layers.items()}
