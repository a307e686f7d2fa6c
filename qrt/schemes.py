"""Quantization schemes: what a layer's weights (and optionally activations) become.

Frozen dataclasses, validated on construction and saved into checkpoints. Named presets
(`"w4a16"`, `"w8a8"`, ...) resolve to scheme objects through `resolve_scheme`.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch

WEIGHT_BITS = (2, 3, 4, 8)
WEIGHT_STRATEGIES = ("tensor", "channel", "group")
ACT_STRATEGIES = ("token", "tensor")
ACTORDERS = (None, "weight", "group")
OBSERVERS = ("minmax", "moving_minmax", "mse")
# The one dtype-name table: float dtypes by the names configs, checkpoints and the CLI use.
FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def dtype_name(dtype: torch.dtype) -> str:
    """"float16" for torch.float16, ...; ValueError for a dtype not in FLOAT_DTYPES."""
    for name, d in FLOAT_DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"dtype: expected one of {tuple(FLOAT_DTYPES)}, found {dtype}")


def storage_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """16-bit dtype a checkpoint of a `model_dtype` model is written in (fp32 -> fp16)."""
    return model_dtype if model_dtype in (torch.float16, torch.bfloat16) else torch.float16


def _require(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"invalid quantization scheme field '{field_name}': {msg}")


@dataclass(frozen=True)
class ActivationScheme:
    """Integer activation quantization (always int8 here).

    dynamic=True: scales computed per token at run time (strategy "token").
    dynamic=False: one per-tensor `input_scale` found by an observer during calibration.
    """

    bits: int = 8
    strategy: str = "token"
    symmetric: bool = True
    dynamic: bool = True
    observer: str = "minmax"

    def __post_init__(self):
        _require(self.bits == 8, "activations.bits", f"expected 8, found {self.bits!r}")
        _require(self.strategy in ACT_STRATEGIES, "activations.strategy",
                 f"expected one of {ACT_STRATEGIES}, found {self.strategy!r}")
        _require(isinstance(self.symmetric, bool), "activations.symmetric",
                 f"expected bool, found {self.symmetric!r}")
        _require(isinstance(self.dynamic, bool), "activations.dynamic",
                 f"expected bool, found {self.dynamic!r}")
        _require(self.dynamic or self.strategy == "tensor", "activations.strategy",
                 "static activation quantization needs strategy 'tensor', found 'token'")
        _require(self.observer in OBSERVERS, "activations.observer",
                 f"expected one of {OBSERVERS}, found {self.observer!r}")


@dataclass(frozen=True)
class QuantScheme:
    """Weight quantization of a Linear layer.

    bits: 2, 3, 4 or 8; signed range [-2^(b-1), 2^(b-1)-1] (compressed-tensors convention).
    strategy: "tensor" (one scale), "channel" (one per output row) or "group"
      (one per `group_size` input columns; the last group may be ragged: ceil(in/G) groups).
    symmetric: zero point 0; otherwise an integer zero point per scale.
    scale_dtype: "float16" | "bfloat16" | "float32", or None for the layer's weight dtype.
    actorder: GPTQ column order: None, "weight" (no g_idx at run time) or "group" (g_idx).
    activations: None for weight-only (WxA16), else an ActivationScheme (WxA8).
    """

    bits: int = 4
    strategy: str = "group"
    group_size: int | None = 128
    symmetric: bool = True
    scale_dtype: str | None = None
    actorder: str | None = None
    activations: ActivationScheme | None = None

    def __post_init__(self):
        _require(self.bits in WEIGHT_BITS, "bits", f"expected one of {WEIGHT_BITS}, found {self.bits!r}")
        _require(self.strategy in WEIGHT_STRATEGIES, "strategy",
                 f"expected one of {WEIGHT_STRATEGIES}, found {self.strategy!r}")
        if self.strategy == "group":
            _require(isinstance(self.group_size, int) and not isinstance(self.group_size, bool)
                     and self.group_size > 0, "group_size",
                     f"strategy 'group' needs a positive int, found {self.group_size!r}")
        else:
            _require(self.group_size is None, "group_size",
                     f"strategy {self.strategy!r} takes no group size, found {self.group_size!r}")
        _require(isinstance(self.symmetric, bool), "symmetric", f"expected bool, found {self.symmetric!r}")
        _require(self.scale_dtype is None or self.scale_dtype in FLOAT_DTYPES, "scale_dtype",
                 f"expected one of {tuple(FLOAT_DTYPES)} or None, found {self.scale_dtype!r}")
        _require(self.actorder in ACTORDERS, "actorder", f"expected one of {ACTORDERS}, found {self.actorder!r}")
        _require(self.actorder != "group" or self.strategy == "group", "actorder",
                 "actorder 'group' needs strategy 'group'")
        _require(self.activations is None or isinstance(self.activations, ActivationScheme),
                 "activations", f"expected ActivationScheme or None, found {type(self.activations).__name__}")
        if self.activations is not None:
            _require(self.symmetric, "symmetric", "int8 activation GEMMs need symmetric weights")

    # -- derived ---------------------------------------------------------------------------
    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def num_groups(self, in_features: int) -> int:
        """Scale columns for a layer with `in_features` inputs (ragged last group counts)."""
        if self.strategy == "group":
            return -(-in_features // self.group_size)
        return 1

    def effective_group_size(self, in_features: int) -> int:
        """Columns sharing one scale; channel/tensor use the whole row."""
        return self.group_size if self.strategy == "group" else in_features

    def scale_torch_dtype(self, weight_dtype: torch.dtype) -> torch.dtype:
        return FLOAT_DTYPES[self.scale_dtype] if self.scale_dtype else weight_dtype

    def replace(self, **changes) -> "QuantScheme":
        return dataclasses.replace(self, **changes)

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantScheme":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown quantization scheme fields: {sorted(unknown)}")
        act = d.get("activations")
        if isinstance(act, dict):
            d["activations"] = ActivationScheme(**act)
        return cls(**d)


_DYNAMIC_TOKEN = ActivationScheme()
PRESETS: dict[str, QuantScheme] = {
    "w8a16": QuantScheme(bits=8, strategy="channel", group_size=None),
    "w4a16": QuantScheme(bits=4, strategy="group", group_size=128),
    "w4a16-asym": QuantScheme(bits=4, strategy="group", group_size=128, symmetric=False),
    "w3a16": QuantScheme(bits=3, strategy="group", group_size=64, symmetric=False),
    "w2a16": QuantScheme(bits=2, strategy="group", group_size=64, symmetric=False),
    "w8a8": QuantScheme(bits=8, strategy="channel", group_size=None, activations=_DYNAMIC_TOKEN),
    "w4a8": QuantScheme(bits=4, strategy="group", group_size=128, activations=_DYNAMIC_TOKEN),
    "w8a8-static": QuantScheme(bits=8, strategy="channel", group_size=None,
                               activations=ActivationScheme(strategy="tensor", dynamic=False)),
}

_SUFFIX = re.compile(r"^(?P<base>.+?)(?:-g(?P<g>\d+))?$")


def resolve_scheme(scheme: "str | QuantScheme") -> QuantScheme:
    """A scheme object, a preset name (`"w4a16"`), or a preset with a group-size suffix
    (`"w4a16-g64"`, `"w4a16-asym-g32"`)."""
    if isinstance(scheme, QuantScheme):
        return scheme
    if not isinstance(scheme, str):
        raise ValueError(f"scheme must be a preset name or QuantScheme, found {type(scheme).__name__}")
    name = scheme.strip().lower()
    if name in PRESETS:
        return PRESETS[name]
    m = _SUFFIX.match(name)
    if m and m.group("g") and m.group("base") in PRESETS:
        base = PRESETS[m.group("base")]
        if base.strategy != "group":
            raise ValueError(f"preset {m.group('base')!r} is per-channel; a group-size suffix does not apply")
        return base.replace(group_size=int(m.group("g")))
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {sorted(PRESETS)} "
                     "(optionally with a -gN group-size suffix) or a QuantScheme")
