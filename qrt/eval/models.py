"""Load a model for evaluation: "smollm2" (the embedded model), a Hugging Face directory
or cached repo id, or a quantized checkpoint (config.json with quantization_config,
loaded through qrt.load_quantized)."""
from __future__ import annotations

import json
import os

import torch

from qrt.hub import resolve_model_dir


def load_for_eval(name_or_path: "str | os.PathLike", device: str | None = None, dtype=None):
    """-> (model in eval mode, tokenizer, description). dtype: None = float32 on CPU, the
    checkpoint's dtype elsewhere (as qrt.load_quantized); or a torch dtype name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = resolve_model_dir(name_or_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = json.loads((root / "config.json").read_text())
    if config.get("quantization_config") is not None:
        from qrt.loader import load_quantized
        model = load_quantized(root, device=device, dtype=dtype, progress=False)
        kind = f"quantized checkpoint ({config['quantization_config'].get('quant_method')})"
    else:
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else "auto"
        elif isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(root, dtype=dtype).to(device)
        kind = "floating-point model"
    model.eval()
    return model, AutoTokenizer.from_pretrained(root), f"{root} [{kind}]"
