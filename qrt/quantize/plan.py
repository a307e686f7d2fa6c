"""Which Linear layers a method (GPTQ, QAT) quantizes, and with which per-layer scheme:
the conventions of qrt.quantize_model (qrt.quantize.rtn), so every method saves the same way."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from qrt.formats.targets import iter_targets
from qrt.quantize.rtn import layer_scheme, tied_output_embedding
from qrt.schemes import QuantScheme


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
                             "(adjust targets/ignore)")
        plan[name] = (module, layer_scheme(scheme, name, module, ragged_groups, adjusted))
    return plan, adjusted, ignore, tied
