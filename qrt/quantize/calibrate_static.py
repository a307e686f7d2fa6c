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
from qrt.runtime.linear import QuantLinear


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
    try:
        for batch in tqdm(batches, desc="calibrating input scales", disable=not progress):
            _run_batch(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missed = [name for name, obs in observers.items() if obs.batches == 0]
    if missed:
        raise ValueError(f"static layers never ran during calibration: {missed}")
    return {name: float(m.input_scale) for name, m in layers.items()}
