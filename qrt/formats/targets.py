"""Which modules a scheme applies to, matched the way compressed-tensors matches
`targets` and `ignore`: an exact module name, a class name, or a `re:` regex applied to
the module name with re.match."""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from torch import nn


def matches(name: str, module: nn.Module, patterns: Iterable[str]) -> bool:
    """True if `name`/`module` matches any pattern (exact name, class name, or re:regex)."""
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif p == name or p == type(module).__name__:
            return True
    return False


def iter_targets(model: nn.Module, targets: Iterable[str] = ("Linear",),
                 ignore: Iterable[str] = ("lm_head",)) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for every module matching `targets` and not `ignore`, in model order."""
    targets, ignore = list(targets), list(ignore)
    for name, module in model.named_modules():
        if name and matches(name, module, targets) and not matches(name, module, ignore):
            yield name, module


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path `name` with `new`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
