"""What is inside a checkpoint directory, read from config.json and the safetensors headers
only (no tensor data): per-layer bits and group size, sizes, and the fp16 equivalent."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qrt.checkpoint.shards import ShardIndex
from qrt.formats.ct_config import find_group, scheme_from_group

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
          "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class LayerInfo:
    name: str
    bits: int | None  # None: stored in floating point
    group_size: int | None  # None for channel / tensor strategies
    strategy: str
    shape: tuple[int, int]  # (out, in)
    nbytes: int


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    quant_method: str | None
    quant_format: str | None
    groups: dict  # group name -> one-line description
    layers: list
    file_bytes: int  # sum of the safetensors files on disk
    fp16_bytes: int  # the same model with every weight in fp16

    @property
    def ratio_vs_fp16(self) -> float:
        return self.file_bytes / self.fp16_bytes


def describe_group(g: dict) -> str:
    w, a = g.get("weights") or {}, g.get("input_activations")
    gs = f"g{w['group_size']}" if w.get("strategy") in ("group", "tensor_group") else w.get("strategy", "?")
    act = "a16" if a is None else "a4" if a.get("num_bits") == 4 and a.get("type") == "float" \
        else f"a{a.get('num_bits')}{'-fp' if a.get('type') == 'float' else ''}-{a.get('strategy')}"
    if w.get("type") == "float":
        kind = "fp8" if w.get("num_bits") == 8 else "nvfp4" if w.get("strategy") == "tensor_group" else "mxfp4"
        return f"{kind}{act} {gs} [{g.get('format')}]"
    sym = "sym" if w.get("symmetric", True) else "asym"
    return f"w{w.get('num_bits')}{act} {gs} {sym} [{g.get('format')}]"


def checkpoint_info(path) -> CheckpointInfo:
    root = Path(path)
    cfg = json.loads((root / "config.json").read_text())
    qcfg = cfg.get("quantization_config") or {}
    shards = ShardIndex(root)
    sizes = {k: _nbytes(shards, k) for k in shards.names()}
    by_module: dict[str, list[str]] = {}
    for k in shards.names():
        by_module.setdefault(k.rpartition(".")[0], []).append(k)
    layers, fp16 = [], 0
    for mod, keys in sorted(by_module.items()):
        nbytes = sum(sizes[k] for k in keys)
        if f"{mod}.weight_shape" in keys or f"{mod}.weight_scale" in keys:
            out_f, in_f = _quant_shape(shards, mod, keys)
            gname = find_group(mod, ["Linear", "Embedding"], qcfg)
            s = scheme_from_group(qcfg["config_groups"][gname], gname) if gname else None
            layers.append(LayerInfo(mod, s.bits if s else None, s.group_size if s else None,
                                    s.strategy if s else "?", (out_f, in_f), nbytes))
            fp16 += 2 * out_f * in_f + sum(sizes[k] for k in keys if k.endswith(".bias"))
        else:
            for k in keys:
                shp = shards.shape(k)
                n = 1
                for d in shp:
                    n *= d
                fp16 += 2 * n if _dtype(shards, k).startswith(("F", "BF")) else sizes[k]
                if k.endswith(".weight") and len(shp) == 2:
                    layers.append(LayerInfo(mod, None, None, _dtype(shards, k), tuple(shp), sizes[k]))
    file_bytes = sum((root / f).stat().st_size for f in set(shards.file_of.values()))
    return CheckpointInfo(root, qcfg.get("quant_method"), qcfg.get("format"),
                          {n: describe_group(g) for n, g in (qcfg.get("config_groups") or {}).items()},
                          layers, file_bytes, fp16)


def _dtype(shards: ShardIndex, name: str) -> str:
    return shards._open(shards.file_of[name]).get_slice(name).get_dtype()


def _nbytes(shards: ShardIndex, name: str) -> int:
    n = _BYTES.get(_dtype(shards, name), 4)
    for d in shards.shape(name):
        n *= d
    return n


def _quant_shape(shards: ShardIndex, mod: str, keys: list[str]) -> tuple[int, int]:
    if f"{mod}.weight_shape" in keys:
        out_f, in_f = shards.get_tensor(f"{mod}.weight_shape").tolist()
        return int(out_f), int(in_f)
    if f"{mod}.weight_packed" in keys and _dtype(shards, f"{mod}.weight_packed") == "U8":
        out_f, half = shards.shape(f"{mod}.weight_packed")  # FP4: two e2m1 codes per byte
        return out_f, 2 * half
    out_f, in_f = shards.shape(f"{mod}.weight")  # int-quantized int8 / float-quantized FP8, unpacked
    return out_f, in_f
