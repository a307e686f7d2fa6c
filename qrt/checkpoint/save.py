"""save_quantized: a quantized model -> a compressed-tensors checkpoint directory.

Layout (what llmcompressor writes and vLLM reads): config.json with `quantization_config`,
model.safetensors or model-0000k-of-0000n.safetensors + model.safetensors.index.json,
generation_config.json, tokenizer files. Written atomically (qrt.checkpoint.atomic).

Non-quantized float tensors (embedding, norms, biases) are written in 16 bits: the
model's own dtype if it is fp16/bf16, else fp16 (an fp32 model, e.g. the GGUF-derived
SmolLM2). A quantized checkpoint is meant for 16-bit inference, and vLLM loads it in
16 bits anyway; pass dtype=torch.float32 to keep fp32.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from qrt.checkpoint.atomic import atomic_dir, check_out_dir
from qrt.checkpoint.state import build_quantization_config, checkpoint_tensors, ragged_layers
from qrt.schemes import storage_dtype

log = logging.getLogger("qrt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "vocab.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")


@dataclass(frozen=True)
class SavedCheckpoint:
    """What save_quantized wrote. adjusted: {layer: (requested, used) group size}."""

    path: Path
    files: tuple[str, ...]
    total_bytes: int
    quant_format: str
    config_groups: int
    adjusted: dict = field(default_factory=dict)
    ragged: tuple = ()

    def summary(self) -> str:
        lines = [f"wrote {self.path} ({self.total_bytes / 1e6:.1f} MB, {len(self.files)} file(s), "
                 f"format {self.quant_format}, {self.config_groups} config group(s))"]
        if self.adjusted:
            by = {}
            for n, (req, used) in self.adjusted.items():
                by.setdefault((req, used), []).append(n)
            for (req, used), ns in by.items():
                lines.append(f"note: group size {req} does not divide in_features of {len(ns)} layer(s) "
                             f"(e.g. {ns[0]}); they use group size {used} in their own config group, "
                             "so vLLM and compressed-tensors read the file")
        if self.ragged:
            lines.append(f"note: {len(self.ragged)} layer(s) keep a ragged last group (--ragged-groups); "
                         "only qrt reads this checkpoint")
        return "\n".join(lines)


def _resolve_save_dtype(model: nn.Module, dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        raise ValueError(f"dtype must be 'auto' or a torch.dtype, found {dtype!r}")
    rec = getattr(model, "qrt_quantization", None)
    if rec is not None:
        return rec.storage_dtype
    return storage_dtype(next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float16))


def save_quantized(model: nn.Module, out_dir: "str | os.PathLike", max_shard_size: "int | str" = "2GB",
                   ragged_groups: bool = False, tokenizer=None, dtype="auto",
                   overwrite: bool = False) -> SavedCheckpoint:
    """Write `model` (after qrt.quantize_model) as a compressed-tensors checkpoint.

    ragged_groups=False refuses layers whose group size does not divide in_features
    (peers cannot read them); True writes them for qrt-only use. tokenizer: saved along;
    if None, tokenizer files are copied from the model's source directory when it has one.
    overwrite: also write into an existing directory qrt did not write, replacing only qrt's
    files (a new, empty or qrt-written directory is always fine; see qrt.checkpoint.atomic).
    """
    check_out_dir(out_dir, overwrite)  # before any work
    ragged = ragged_layers(model)
    if ragged and not ragged_groups:
        n, g, k = ragged[0]
        raise ValueError(f"layer '{n}': group size {g} does not divide in_features {k} "
                         f"({len(ragged)} such layer(s)); compressed-tensors and vLLM cannot read a ragged "
                         "last group. Quantize with ragged_groups=False (the default) to use a dividing "
                         "group size, or save with ragged_groups=True for a qrt-only checkpoint")
    rec = getattr(model, "qrt_quantization", None)
    qcfg = build_quantization_config(model, rec.scheme if rec else None)
    tensors = checkpoint_tensors(model, _resolve_save_dtype(model, dtype))
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        files = _write_shards(tensors, tmp, max_shard_size)
        _write_config(model, qcfg, _resolve_save_dtype(model, dtype), tmp)
        _copy_extras(model, tokenizer, tmp)
    out = Path(out_dir).expanduser().absolute()
    info = SavedCheckpoint(path=out, files=tuple(files), total_bytes=sum((out / f).stat().st_size for f in files),
                           quant_format=qcfg["format"], config_groups=len(qcfg["config_groups"]),
                           adjusted=dict(rec.adjusted) if rec else {}, ragged=tuple(ragged))
    for line in info.summary().splitlines():
        log.info(line)
    return info


def _write_shards(tensors: dict[str, torch.Tensor], out: Path, max_shard_size) -> list[str]:
    split = split_torch_state_dict_into_shards(tensors, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    items = list(split.filename_to_tensors.items())
    for fname, names in tqdm(items, desc="Writing shards", unit="shard", disable=len(items) < 2):
        save_file({k: tensors[k].cpu() for k in names}, str(out / fname), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [f for f, _ in items]


def _write_config(model: nn.Module, qcfg: dict, dtype: torch.dtype, out: Path) -> None:
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["architectures"] = [type(model).__name__]  # as save_pretrained does: the loader builds this class
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    if "torch_dtype" in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    cfg["quantization_config"] = qcfg
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _copy_extras(model: nn.Module, tokenizer, out: Path) -> None:
    gen = getattr(model, "generation_config", None)
    can_generate = getattr(model, "can_generate", lambda: False)()
    if gen is not None and can_generate:
        gen.save_pretrained(out)
    src = Path(getattr(model, "name_or_path", "") or "")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    elif src.is_dir():
        for f in TOKENIZER_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, out / f)
    if src.is_dir() and not (out / "generation_config.json").exists() and (src / "generation_config.json").is_file():
        shutil.copy2(src / "generation_config.json", out / "generation_config.json")
