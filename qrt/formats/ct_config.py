"""compressed-tensors `quantization_config`: QuantScheme <-> config-group JSON.

The JSON written is what compressed-tensors 0.20's `ModelCompressor.update_config` writes
(`QuantizationConfig.model_dump()` plus `version`, `quant_method`, `sparsity_config`,
`transform_config`), with only keys every peer version knows: older compressed-tensors
releases (pinned by vLLM) validate QuantizationArgs with extra="forbid", so no
`scale_dtype`/`zp_dtype`/`observer` keys are written.

Group precedence, as in compressed-tensors `match_targets` and vLLM
`find_matched_target`: an exact module name beats a `re:` regex beats a class name.
"""
from __future__ import annotations

from qrt.formats.targets import name_matches
from qrt.schemes import ActivationScheme, QuantScheme

QUANT_METHOD = "compressed-tensors"
SPEC_VERSION = "0.20.0"  # the compressed-tensors release whose layout we write and test against
PACK_QUANTIZED, INT_QUANTIZED, NAIVE_QUANTIZED = "pack-quantized", "int-quantized", "naive-quantized"
FLOAT_QUANTIZED, NVFP4_PACK_QUANTIZED, MXFP4_PACK_QUANTIZED = \
    "float-quantized", "nvfp4-pack-quantized", "mxfp4-pack-quantized"
MIXED_PRECISION = "mixed-precision"
FLOAT_FORMATS = (FLOAT_QUANTIZED, NVFP4_PACK_QUANTIZED, MXFP4_PACK_QUANTIZED)
FORMATS = (PACK_QUANTIZED, INT_QUANTIZED, NAIVE_QUANTIZED) + FLOAT_FORMATS
SUPPORTED = ("pack-quantized (int 2/3/4/8-bit weights, group/channel/tensor, sym/asym, act-order), "
             "int-quantized / naive-quantized (int8 weights, int8 activations dynamic per token or static "
             "per tensor), float-quantized (FP8 e4m3 weights per channel or per tensor, weight-only or with "
             "dynamic per-token FP8 activations), nvfp4-pack-quantized (NVFP4 weights, group 16, 16-bit "
             "activations or NVFP4 activations, W4A4, with input_global_scale), mxfp4-pack-quantized "
             "(MXFP4 weights, group 32, 16-bit activations)")
_FP4_SCALE_DTYPES = {16: "torch.float8_e4m3fn", 32: "torch.uint8"}  # what compressed-tensors writes
_ACTORDER_ALIASES = {"static": "weight", "dynamic": "group", True: "group", False: None}


def layer_format(scheme: QuantScheme) -> str:
    """int-quantized (int8 `weight`, unpacked) for W8A8; pack-quantized otherwise: weight-only
    (8-bit too, as compressed-tensors infers) and sub-8-bit weights with int8 activations
    (W4A8: vLLM's W4A8 int scheme reads `weight_packed`; the group's explicit `format` makes
    compressed-tensors honor it). Float schemes: float-quantized (FP8), nvfp4- or
    mxfp4-pack-quantized (FP4)."""
    if scheme.is_float:
        return FLOAT_QUANTIZED if scheme.bits == 8 else \
            NVFP4_PACK_QUANTIZED if scheme.strategy == "tensor_group" else MXFP4_PACK_QUANTIZED
    return INT_QUANTIZED if scheme.activations is not None and scheme.bits == 8 else PACK_QUANTIZED


def weights_args(s: QuantScheme) -> dict:
    d = {"num_bits": s.bits, "type": s.type, "symmetric": s.symmetric,
         "group_size": s.group_size if s.strategy in ("group", "tensor_group") else None,
         "strategy": s.strategy, "dynamic": False}
    if s.is_float and s.bits == 4:  # FP4 readers need it (no peer without FP4 support reads these)
        d["scale_dtype"] = _FP4_SCALE_DTYPES[s.group_size]
    if s.actorder is not None:
        d["actorder"] = s.actorder
    return d


def activation_args(a: ActivationScheme | None) -> dict | None:
    if a is None:
        return None
    d = {"num_bits": a.bits, "type": a.type, "symmetric": a.symmetric, "group_size": a.group_size,
         "strategy": a.strategy, "dynamic": a.dynamic}
    if a.is_nvfp4:  # as llmcompressor's NVFP4 preset writes it (W4A4 readers know the key)
        d["scale_dtype"] = _FP4_SCALE_DTYPES[16]
    return d


def config_group(scheme: QuantScheme, targets: list[str], fmt: str | None = None) -> dict:
    return {"targets": list(targets), "weights": weights_args(scheme),
            "input_activations": activation_args(scheme.activations),
            "output_activations": None, "format": fmt or layer_format(scheme)}


def quantization_config(groups: dict[str, dict], ignore: list[str]) -> dict:
    """The full config.json `quantization_config` for config groups built by config_group."""
    formats = {g["format"] for g in groups.values()}
    return {
        "version": SPEC_VERSION, "quant_method": QUANT_METHOD,
        "sparsity_config": {}, "transform_config": {},
        "config_groups": groups,
        "format": formats.pop() if len(formats) == 1 else MIXED_PRECISION,
        "global_compression_ratio": None, "ignore": list(ignore),
        "kv_cache_scheme": None, "moe_sparsity_config": None,
        "quantization_status": "compressed",
    }


# -- reading ----------------------------------------------------------------------------------
def _bad(where: str, expected: str, found) -> ValueError:
    return ValueError(f"quantization_config {where}: expected {expected}, found {found!r}")


def scheme_from_group(group: dict, where: str) -> QuantScheme:
    """One config group's `weights`/`input_activations` -> QuantScheme (scale_dtype unset:
    the reader fills it from the tensor)."""
    w = group.get("weights")
    if not isinstance(w, dict):
        raise _bad(f"{where}.weights", "a QuantizationArgs object", w)
    wtype = w.get("type", "int")
    if wtype not in ("int", "float"):
        raise _bad(f"{where}.weights.type", "'int' or 'float'", wtype)
    if w.get("strategy") == "block" or w.get("block_structure"):
        raise _bad(f"{where}.weights.strategy", "tensor, channel, group or tensor_group (block-wise "
                   "weights such as FP8_BLOCK are not implemented by qrt)",
                   f"{w.get('strategy')} with block_structure {w.get('block_structure')}")
    if group.get("output_activations") is not None:
        raise _bad(f"{where}.output_activations", "null (output quantization is unsupported)",
                   group["output_activations"])
    gs = w.get("group_size")
    strategy = w.get("strategy") or ("group" if gs and gs > 0 else "channel" if gs == -1 else "tensor")
    if wtype == "float":
        return _float_scheme(w, strategy, gs, group.get("input_activations"), where)
    actorder = w.get("actorder")
    actorder = _ACTORDER_ALIASES.get(actorder, actorder)
    try:
        return QuantScheme(bits=w.get("num_bits", 8), strategy=strategy,
                           group_size=gs if strategy == "group" else None,
                           symmetric=w.get("symmetric", True), actorder=actorder,
                           activations=_activation_scheme(group.get("input_activations"), where))
    except ValueError as e:
        raise ValueError(f"quantization_config {where}: {e}") from None


def _float_scheme(w: dict, strategy: str, gs, acts: dict | None, where: str) -> QuantScheme:
    try:
        return QuantScheme(type="float", bits=w.get("num_bits", 8), strategy=strategy,
                           group_size=gs if strategy in ("group", "tensor_group") else None,
                           symmetric=w.get("symmetric", True), actorder=w.get("actorder") or None,
                           activations=_activation_scheme(acts, where))
    except ValueError as e:
        raise ValueError(f"quantization_config {where}: {e}") from None


def _activation_scheme(a: dict | None, where: str) -> ActivationScheme | None:
    if a is None:
        return None
    if a.get("type") == "float" and a.get("num_bits") == 8:
        if not (a.get("dynamic") is True and a.get("strategy") == "token" and a.get("symmetric", True)):
            raise _bad(f"{where}.input_activations", "FP8 activations dynamic, symmetric, per token "
                       "(static or group-wise FP8 activations are not implemented by qrt)",
                       f"dynamic={a.get('dynamic')!r}, strategy={a.get('strategy')!r}")
        return ActivationScheme(type="float")
    if a.get("type") == "float" and a.get("num_bits") == 4:
        _check_scale_dtype(a, f"{where}.input_activations")
        return ActivationScheme(bits=4, type="float", strategy=a.get("strategy"), group_size=a.get("group_size"),
                                dynamic=a.get("dynamic"), symmetric=a.get("symmetric", True))
    if a.get("type", "int") != "int" or a.get("num_bits") != 8:
        raise _bad(f"{where}.input_activations", "int 8-bit, float 8-bit (FP8) or float 4-bit (NVFP4)",
                   f"{a.get('type')} {a.get('num_bits')}-bit")
    return ActivationScheme(strategy=a.get("strategy") or "tensor", symmetric=a.get("symmetric", True),
                            dynamic=bool(a.get("dynamic", False)))


def _check_scale_dtype(a: dict, where: str) -> None:
    sd = a.get("scale_dtype")
    if sd not in (None, _FP4_SCALE_DTYPES[16]):
        raise _bad(f"{where}.scale_dtype", f"{_FP4_SCALE_DTYPES[16]!r} (NVFP4's e4m3 group scales) or null", sd)


def find_group(name: str, class_names: list[str], qcfg: dict) -> str | None:
    """The config group whose targets claim module `name` (exact > regex > class), or None
    if no group does or `ignore` lists it. class_names: the module's class and its bases."""
    ignore = qcfg.get("ignore") or []
    if any(name_matches(name, p) or p in class_names for p in ignore):
        return None
    best = None
    for gname, g in (qcfg.get("config_groups") or {}).items():
        for t in g.get("targets", []):
            rank = 0 if t == name else 1 if t.startswith("re:") and name_matches(name, t) \
                else 2 if t in class_names else None
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, gname)
    return best[1] if best else None


def group_format(qcfg: dict, gname: str, layer: str | None = None) -> str:
    """A group's storage format: its own `format`, else the config's (unless mixed)."""
    fmt = qcfg["config_groups"][gname].get("format") or qcfg.get("format")
    if fmt not in FORMATS:
        who = f"layer '{layer}' (config group '{gname}')" if layer else f"config group '{gname}'"
        raise ValueError(f"{who}: checkpoint format {fmt!r} is not implemented by qrt; qrt reads {SUPPORTED}")
    return fmt
