"""Which backend runs a QuantLinear on its device: the one registry for weight-only (WxA16),
int8-activation (WxA8) and float (FP8 / FP4) layers.

A backend is usable(layer, device) -> bool and build(layer) -> (kernel, col_perm), where the
kernel holds the tensors laid out for it and has matmul(x [M, K], bias, ...) -> y [M, N].
QuantLinear.finalize builds the runtime once per device through prepare_runtime; forward
only runs it. backend=None takes the first usable backend in the order below that may be
picked by default (the Triton interpreter on the CPU is for tests: usable, never picked).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from qrt.runtime import fp_linear, int8_act, weight_only


@dataclass(frozen=True)
class Backend:
    name: str
    usable: Callable[[object, torch.device], bool]
    build: Callable[[object], tuple[object, torch.Tensor | None]]
    by_default: Callable[[torch.device], bool] = lambda device: True


def _not_on_cpu(device: torch.device) -> bool:
    return device.type != "cpu"


WEIGHT_ONLY = (
    Backend("triton", weight_only.triton_usable, weight_only.build_triton, by_default=_not_on_cpu),
    Backend("int4pack", weight_only.int4pack_usable, weight_only.build_int4pack),
    Backend("int8pack", weight_only.int8pack_usable, weight_only.build_int8pack),
    Backend("dense", weight_only.dense_usable, weight_only.build_dense),
)
INT8_ACTIVATIONS = (
    Backend("triton", int8_act.triton_a8_usable, int8_act.build_triton_a8, by_default=_not_on_cpu),
    Backend("int8pack_a8", int8_act.int8pack_a8_usable, int8_act.build_int8pack_a8),
    Backend("int_mm", int8_act.int_mm_usable, int8_act.build_int_mm),
    Backend("dense", int8_act.dense_a8_usable, int8_act.build_dense_a8, by_default=lambda device: False),
)

FLOAT = (
    Backend("triton", fp_linear.float_triton_usable, fp_linear.build_float_triton, by_default=_not_on_cpu),
    Backend("dense", fp_linear.float_dense_usable, fp_linear.build_float_dense),
)


@dataclass(frozen=True)
class LayerRuntime:
    """layer._runtime: the backend's name, its kernel, and the act-order column
    permutation of x (int64 [K] or None) applied before the kernel."""

    backend: str
    kernel: object
    col_perm: torch.Tensor | None


def candidates(layer) -> tuple[Backend, ...]:
    """The backends for this kind of layer, best first."""
    if layer.scheme.is_float:
        return FLOAT
    return WEIGHT_ONLY if layer.scheme.activations is None else INT8_ACTIVATIONS


def usable_backends(layer) -> tuple[str, ...]:
    """Names of the backends that can serve `layer` on its buffers' device, best first."""
    device = layer.weight_packed.device
    return tuple(b.name for b in candidates(layer) if b.usable(layer, device))


def choose_backend(layer, backend: str | None = None) -> Backend:
    """The named backend if it can serve the layer (ValueError naming the usable ones if
    not), or for None the first usable one that may be picked by default."""
    device = layer.weight_packed.device
    usable = [b for b in candidates(layer) if b.usable(layer, device)]
    for b in usable:
        if b.name == backend or backend is None and b.by_default(device):
            return b
    raise ValueError(f"backend: expected one of {tuple(b.name for b in usable)} for this layer "
                     f"({layer.extra_repr()}, device {device.type}), found {backend!r}")


def prepare_runtime(layer, backend: str | None = None) -> LayerRuntime:
    """Build the layer's runtime for `backend` (None: the default for its device)."""
    chosen = choose_backend(layer, backend)
    kernel, col_perm = chosen.build(layer)
    return LayerRuntime(chosen.name, kernel, col_perm)
