"""Checkpoint directories as AutoGPTQ and AutoAWQ save them themselves (before, or
without, transformers' integration): the quantization settings live in
quantize_config.json (AutoGPTQ, GPTQModel) or quant_config.json (AutoAWQ) rather than in
config.json's `quantization_config`, and AutoGPTQ names its single weights file after the
model (gptq_model-4bit-128g.safetensors) rather than model.safetensors."""
from __future__ import annotations

import json
from pathlib import Path

# file name -> quant_method its settings belong to
LEGACY_CONFIGS = {"quantize_config.json": "gptq", "quant_config.json": "awq"}


def legacy_quant_config(root: Path) -> dict | None:
    """The quantization settings of an AutoGPTQ / AutoAWQ directory as a
    `quantization_config` dict (with quant_method filled in), or None if it has none."""
    for fname, method in LEGACY_CONFIGS.items():
        path = Path(root) / fname
        if path.is_file():
            try:
                cfg = json.loads(path.read_text())
            except ValueError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
            if not isinstance(cfg, dict):
                raise ValueError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
            return {"quant_method": method, **cfg}
    return None


def lone_safetensors(root: Path) -> str | None:
    """The name of the only *.safetensors file in `root`, if there is exactly one."""
    files = sorted(p.name for p in Path(root).glob("*.safetensors") if p.is_file())
    return files[0] if len(files) == 1 else None
