"""One validation pass over a checkpoint's config.json and its quantization settings, before
anything is built: every malformed value raises CheckpointConfigError (a ValueError) naming
the file, the field path, what was expected and what was found.

After `read_checkpoint_config` returns, the readers (qrt.formats.ct_config, gptq, awq) can
rely on the types: no AttributeError/TypeError/re.error from a hostile config.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from qrt.formats.awq import awq_settings
from qrt.formats.ct_config import FORMATS, MIXED_PRECISION, QUANT_METHOD, group_format, scheme_from_group
from qrt.formats.gptq import gptq_config
from qrt.formats.legacy import LEGACY_CONFIGS, legacy_quant_config

_MODEL_INTS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size")
_ARGS_TYPES = {"num_bits": (int,), "type": (str,), "symmetric": (bool,), "group_size": (int, type(None)),
               "strategy": (str, type(None)), "dynamic": (bool, str), "actorder": (str, bool, type(None))}


class CheckpointConfigError(ValueError):
    """A checkpoint's config.json (or quantize_config.json / quant_config.json) is malformed.
    file: the JSON file; field: the dotted path inside it ("" for the whole file)."""

    def __init__(self, file, field: str, expected: str, found):
        self.file, self.field, self.expected, self.found = str(file), field, expected, found
        shown = found if isinstance(found, str) and found.startswith("<") else repr(found)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        where = f"{self.file}: {field}" if field else self.file
        super().__init__(f"{where}: expected {expected}, found {shown}")


def read_checkpoint_config(root: "str | Path") -> tuple[dict, dict | None]:
    """(config.json as a dict, the quantization settings or None), both validated.
    The settings come from config.json's quantization_config, else from AutoGPTQ's
    quantize_config.json / AutoAWQ's quant_config.json."""
    root = Path(root)
    path = root / "config.json"
    raw = _load_json(path)
    _check_model_fields(raw, path)
    qcfg = raw.get("quantization_config")
    if qcfg is None:
        legacy = [root / f for f in LEGACY_CONFIGS if (root / f).is_file()]
        path = legacy[0] if legacy else path
        qcfg = _legacy(root, path) if legacy else None
        field = ""
    else:
        field = "quantization_config"
    if qcfg is not None:
        validate_quant_config(qcfg, path, field)
    return raw, qcfg


def validate_quant_config(qcfg, file, field: str = "quantization_config") -> None:
    """CheckpointConfigError unless `qcfg` is a well-formed quantization config qrt reads."""
    at = (lambda k: f"{field}.{k}" if field else k)
    if not isinstance(qcfg, dict):
        raise CheckpointConfigError(file, field, "a JSON object", _kind(qcfg))
    method = qcfg.get("quant_method")
    if method == QUANT_METHOD:
        return _check_compressed_tensors(qcfg, file, at)
    if isinstance(method, str) and method.lower() in ("gptq", "awq"):
        return _check_gptq_awq(qcfg, method.lower(), file, field)
    raise CheckpointConfigError(file, at("quant_method"), f"one of {[QUANT_METHOD, 'gptq', 'awq']}", method)


def _load_json(path: Path):
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointConfigError(path, "", "a config.json file", "<no such file>") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        detail = f"<{e.msg} at line {e.lineno} column {e.colno}>" if isinstance(e, json.JSONDecodeError) \
            else f"<{e.reason} at byte {e.start}>"
        raise CheckpointConfigError(path, "", "valid JSON", detail) from None
    except RecursionError:
        raise CheckpointConfigError(path, "", "valid JSON of sane depth", "<nesting too deep>") from None
    if not isinstance(data, dict):
        raise CheckpointConfigError(path, "", "a JSON object", _kind(data))
    return data


def _legacy(root: Path, path: Path) -> dict:
    try:
        return legacy_quant_config(root)
    except ValueError as e:
        raise CheckpointConfigError(path, "", "a JSON object", f"<{e}>") from None


def _check_model_fields(raw: dict, path: Path) -> None:
    for k in _MODEL_INTS:
        v = raw.get(k)
        if v is not None and not (_is_int(v) and v >= 1):
            raise CheckpointConfigError(path, k, "a positive int", v)
    for k in ("dtype", "torch_dtype"):
        if raw.get(k) is not None and not isinstance(raw[k], str):
            raise CheckpointConfigError(path, k, "a dtype name such as 'float16'", raw[k])


def _check_compressed_tensors(q: dict, file, at) -> None:
    if q.get("format") is not None and q["format"] not in (*FORMATS, MIXED_PRECISION):
        raise CheckpointConfigError(file, at("format"), f"one of {[*FORMATS, MIXED_PRECISION]}", q["format"])
    groups = q.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise CheckpointConfigError(file, at("config_groups"), "a non-empty object of config groups",
                                    groups if not isinstance(groups, (dict, list)) else _kind(groups))
    _check_patterns(q.get("ignore"), file, at("ignore"), allow_none=True)
    for name, g in groups.items():
        where = at(f"config_groups.{name}")
        if not isinstance(g, dict):
            raise CheckpointConfigError(file, where, "a config group object", _kind(g))
        _check_patterns(g.get("targets"), file, f"{where}.targets", allow_none=False)
        if not isinstance(g.get("weights"), dict):
            raise CheckpointConfigError(file, f"{where}.weights", "a QuantizationArgs object", _kind(g.get("weights")))
        _check_args(g["weights"], file, f"{where}.weights")
        a = g.get("input_activations")
        if a is not None:
            if not isinstance(a, dict):
                raise CheckpointConfigError(file, f"{where}.input_activations", "null or a QuantizationArgs object",
                                            _kind(a))
            _check_args(a, file, f"{where}.input_activations")
        if g.get("format") is not None and not isinstance(g["format"], str):
            raise CheckpointConfigError(file, f"{where}.format", "a format name", g["format"])
        try:  # the semantic checks of the reader itself (bits, strategy, formats, ...)
            scheme_from_group(g, f"config_groups.{name}")
            group_format(q, name)
        except ValueError as e:
            raise CheckpointConfigError(file, where, "a config group qrt can read", f"<{e}>") from None


def _check_patterns(v, file, where: str, allow_none: bool) -> None:
    """targets / ignore: a list of strings (names, class names, `re:` regexes that compile)."""
    if v is None and allow_none:
        return
    if not isinstance(v, list) or (not allow_none and not v):
        raise CheckpointConfigError(file, where, "a list of module names, class names or re: regexes",
                                    v if not isinstance(v, (dict, list)) else _kind(v))
    for i, p in enumerate(v):
        if not isinstance(p, str) or not p:
            raise CheckpointConfigError(file, f"{where}[{i}]", "a non-empty string", p)
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except (re.error, RecursionError, OverflowError) as e:
                raise CheckpointConfigError(file, f"{where}[{i}]", "a valid regular expression after 're:'",
                                            f"<{p!r}: {e}>") from None


def _check_args(args: dict, file, where: str) -> None:
    for k, types in _ARGS_TYPES.items():
        if k in args and (not isinstance(args[k], types) or (isinstance(args[k], bool) and bool not in types)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise CheckpointConfigError(file, f"{where}.{k}", names, args[k])


def _check_gptq_awq(q: dict, method: str, file, field: str) -> None:
    at = (lambda k: f"{field}.{k}" if field else k)
    for k in ("bits", "w_bit", "group_size", "q_group_size"):
        if k in q and not _is_int(q[k]):
            raise CheckpointConfigError(file, at(k), "an int", q[k])
    for k in ("checkpoint_format", "format", "version", "pack_dtype"):
        if q.get(k) is not None and not isinstance(q[k], str):
            raise CheckpointConfigError(file, at(k), "a string", q[k])
    for k in ("desc_act", "sym", "zero_point", "true_sequential"):
        if q.get(k) is not None and not isinstance(q[k], bool):
            raise CheckpointConfigError(file, at(k), "true or false", q[k])
    try:
        gptq_config(q) if method == "gptq" else awq_settings(q)
    except ValueError as e:
        raise CheckpointConfigError(file, field, f"a {method.upper()} config qrt can read",
                                    f"<{e}>") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v) -> str:
    return f"<{type(v).__name__}: {json.dumps(v, default=str)[:80]}>" if isinstance(v, (dict, list)) \
        else f"<{type(v).__name__}>" if v is None else v
