"""MODEL_OR_DIR -> (model, tokenizer) for serving: an HF checkpoint dir, a qrt quantized
dir (config.json with quantization_config, read by qrt.load_quantized), a repo id in the
local HF cache, or "smollm2" (the embedded model). `quantize="w4a16"` RTN-quantizes an
unquantized model on load (handy for W4A16-vs-fp32 runs without saving a checkpoint)."""
from __future__ import annotations

import json

import torch
from torch import nn


def load_for_serving(model_or_dir: str, quantize: str | None = None, dtype: torch.dtype = torch.float32,
                     device: str = "cpu") -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qrt.hub.resolve import resolve_model_dir
    root = resolve_model_dir(model_or_dir)
    config = json.loads((root / "config.json").read_text())
    if config.get("quantization_config") is not None:
        if quantize is not None:
            raise ValueError(f"quantize: {root} is already quantized; expected quantize=None, found {quantize!r}")
        from qrt.hub.load import load_quantized
        model = load_quantized(root, device=device, dtype=dtype, progress=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(root, dtype=dtype).to(device)
        if quantize is not None:
            from qrt.quantize.rtn import quantize_model
            quantize_model(model, quantize, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(root)
    return model.eval(), tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: "str | torch.dtype") -> torch.dtype:
    """"float32" / "bfloat16" / "float16" (or a torch.dtype) -> torch.dtype; ValueError otherwise."""
    if isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, found {name!r}")
    return DTYPES[name]


def model_name(model_or_dir: str) -> str:
    """The id /v1/models reports: the argument as given, or the directory's name."""
    from pathlib import Path
    p = Path(str(model_or_dir))
    return p.name if p.is_dir() else str(model_or_dir)
