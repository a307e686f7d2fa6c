"""Choosing the weight-only backend of every QuantLinear in a model."""
from __future__ import annotations

from torch import nn

from qrt.runtime.linear import QuantLinear


def use_backend(model: nn.Module, backend: str | None) -> nn.Module:
    """Re-finalize every weight-only QuantLinear with `backend` (None: fastest for the
    device; "dense": exact in the model dtype; "int4pack"/"int8pack": torch's CPU packed
    kernels, bf16 math; "triton"). A layer the backend cannot serve raises ValueError
    naming the usable ones. Returns the model."""
    for m in model.modules():
        if isinstance(m, QuantLinear) and m.scheme.activations is None:
            m.finalize(backend=backend)
    return model
