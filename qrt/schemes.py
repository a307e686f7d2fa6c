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
WEIGHT_STRATEGIES = ("tensor", "channel", "group", "tensor_group")
NUM_TYPES = ("int", "float")
# float weights qrt implements: (bits, strategy, group_size) -> what compressed-tensors calls it
FLOAT_WEIGHT_LAYOUTS = {(8, "channel", None): "FP8 e4m3 per channel",
                        (8, "tensor", None): "FP8 e4m3 per tensor",
                        (4, "tensor_group", 16): "NVFP4: e2m1, e4m3 scale per 16, fp32 global scale",
                        (4, "group", 32): "MXFP4: e2m1, e8m0 scale per 32"}
ACT_STRATEGIES = ("token", "tensor")
NVFP4_ACTIVATIONS = ("NVFP4: type 'float', strategy 'tensor_group', group_size 16, dynamic 'local' "
                     "(e4m3 scale per 16 inputs at run time, fp32 input_global_scale), symmetric")
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
    """Activation quantization: int8, FP8 e4m3 (type "float", dynamic per token only), or
    NVFP4 (type "float", 4 bits; read from compressed-tensors W4A4 checkpoints only).

    dynamic=True: scales computed per token at run time (strategy "token").
    dynamic=False: one per-tensor `input_scale` found by an observer during calibration.
    dynamic="local" (NVFP4 only, compressed-tensors' DynamicType.LOCAL): e4m3 scales per
      `group_size` inputs computed at run time, relative to a calibrated per-layer fp32
      `input_global_scale` (strategy "tensor_group").
    """

    bits: int = 8
    strategy: str = "token"
    symmetric: bool = True
    dynamic: bool | str = True
    observer: str = "minmax"
    type: str = "int"
    group_size: int | None = None

    def __post_init__(self):
        _require(self.bits in (4, 8), "activations.bits",
                 f"expected 8 (int8, FP8 e4m3) or 4 ({NVFP4_ACTIVATIONS}), found {self.bits!r}")
        _require(self.type in NUM_TYPES, "activations.type", f"expected one of {NUM_TYPES}, found {self.type!r}")
        if self.bits == 4:
            self._check_nvfp4()
            return
        _require(self.group_size is None, "activations.group_size",
                 f"8-bit activations take no group size, found {self.group_size!r}")
        _require(self.type == "int" or (self.dynamic is True and self.strategy == "token" and self.symmetric),
                 "activations", "FP8 activations are dynamic, symmetric, per token in qrt; found "
                 f"dynamic={self.dynamic}, strategy={self.strategy!r}, symmetric={self.symmetric}")
        _require(self.strategy in ACT_STRATEGIES, "activations.strategy",
                 f"expected one of {ACT_STRATEGIES}, found {self.strategy!r}")
        _require(isinstance(self.symmetric, bool), "activations.symmetric",
                 f"expected bool, found {self.symmetric!r}")
        _require(isinstance(self.dynamic, bool), "activations.dynamic",
                 f"expected bool for 8-bit activations, found {self.dynamic!r}")
        _require(self.dynamic or self.strategy == "tensor", "activations.strategy",
                 "static activation quantization needs strategy 'tensor', found 'token'")
        _require(self.observer in OBSERVERS, "activations.observer",
                 f"expected one of {OBSERVERS}, found {self.observer!r}")

    def _check_nvfp4(self) -> None:
        found = {"type": self.type, "strategy": self.strategy, "group_size": self.group_size,
                 "dynamic": self.dynamic, "symmetric": self.symmetric}
        want = {"type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local", "symmetric": True}
        bad = [k for k, v in want.items() if found[k] != v or type(found[k]) is not type(v)]
        _require(not bad, "activations", f"4-bit activations in qrt are {NVFP4_ACTIVATIONS} only; found "
                 + ", ".join(f"{k}={found[k]!r}" for k in bad))

    @property
    def is_nvfp4(self) -> bool:
        return self.bits == 4


@dataclass(frozen=True)
class QuantScheme:
    """Weight quantization of a Linear layer.

    bits: 2, 3, 4 or 8; signed range [-2^(b-1), 2^(b-1)-1] (compressed-tensors convention).
    strategy: "tensor" (one scale), "channel" (one per output row) or "group"
      (one per `group_size` input columns; the last group may be ragged: ceil(in/G) groups).
    symmetric: zero point 0; otherwise an integer zero point per scale.
    scale_dtype: "float16" | "bfloat16" | "float32", or None for the layer's weight dtype.
    actorder: GPTQ column order: None, "weight" (no g_idx at run time) or "group" (g_idx).
    activations: None for weight-only (WxA16), else an ActivationScheme (WxA8; NVFP4 W4A4
      when read from a compressed-tensors checkpoint: qrt has no preset that makes one).
    type: "int", or "float" for FP8 (bits 8, e4m3) and FP4 (bits 4, e2m1) weights; the float
      layouts are FLOAT_WEIGHT_LAYOUTS ("tensor_group" = NVFP4's per-group scales times one
      global scale, as compressed-tensors names it).
    """

    bits: int = 4
    strategy: str = "group"
    group_size: int | None = 128
    symmetric: bool = True
    scale_dtype: str | None = None
    actorder: str | None = None
    activations: ActivationScheme | None = None
    type: str = "int"

    def __post_init__(self):
        _require(self.type in NUM_TYPES, "type", f"expected one of {NUM_TYPES}, found {self.type!r}")
        if self.type == "float":
            self._check_float()
            return
        _require(self.strategy != "tensor_group", "strategy", "'tensor_group' is for NVFP4 (type 'float') only")
        _require(self.activations is None or self.activations.type == "int", "activations.type",
                 "integer weights take int8 activations, found 'float'")
        _require(self.bits in WEIGHT_BITS, "bits", f"expected one of {WEIGHT_BITS}, found {self.bits!r}")
        _require(self.strategy in WEIGHT_STRATEGIES, "strategy",
                 f"expected one of {WEIGHT_STRATEGIES}, found {self.strategy!r}")
        if self.strategy in ("group", "tensor_group"):
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

    def _check_float(self) -> None:
        key = (self.bits, self.strategy, self.group_size)
        _require(key in FLOAT_WEIGHT_LAYOUTS, "type",
                 f"float weights as (bits, strategy, group_size) {key} are not implemented; qrt supports "
                 + "; ".join(f"{k} ({v})" for k, v in FLOAT_WEIGHT_LAYOUTS.items()))
        _require(self.symmetric and self.actorder is None, "type",
                 "float weights are symmetric without act-order")
        _require(self.scale_dtype in (None, "float32", "bfloat16", "float16"), "scale_dtype",
                 f"expected None or a float dtype, found {self.scale_dtype!r}")
        a = self.activations
        fp8 = a is not None and not a.is_nvfp4 and a.type == "float" and self.bits == 8
        nvfp4 = a is not None and a.is_nvfp4 and self.bits == 4 and self.strategy == "tensor_group"
        _require(a is None or fp8 or nvfp4, "activations", "float weights take FP8 activations with FP8 "
                 f"weights and NVFP4 activations with NVFP4 weights only, found {a} with "
                 f"{self.bits}-bit {self.strategy} weights")

    @property
    def is_float(self) -> bool:
        return self.type == "float"

    # -- derived ---------------------------------------------------------------------------
    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def num_groups(self, in_features: int) -> int:
        """Scale columns for a layer with `in_features` inputs (ragged last group counts)."""
        if self.strategy in ("group", "tensor_group"):
            return -(-in_features // self.group_size)
        return 1

    def effective_group_size(self, in_features: int) -> int:
        """Columns sharing one scale; channel/tensor use the whole row."""
        return self.group_size if self.strategy in ("group", "tensor_group") else in_features

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
_FP8_TOKEN = ActivationScheme(type="float")
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
    # llmcompressor's FP8_DYNAMIC / W8A16-FP8 / NVFP4A16 / MXFP4A16
    "fp8": QuantScheme(type="float", bits=8, strategy="channel", group_size=None, activations=_FP8_TOKEN),
    "fp8-w": QuantScheme(type="float", bits=8, strategy="channel", group_size=None),
    "nvfp4a16": QuantScheme(type="float", bits=4, strategy="tensor_group", group_size=16),
    "mxfp4a16": QuantScheme(type="float", bits=4, strategy="group", group_size=32),
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
        if base.strategy != "group" or base.is_float:
            raise ValueError(f"preset {m.group('base')!r} is per-channel; a group-size suffix does not apply")
        return base.replace(group_size=int(m.group("g")))
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {sorted(PRESETS)} "
                     "(optionally with a -gN group-size suffix) or a QuantScheme")
