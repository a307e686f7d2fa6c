"""Load a model for evaluation: "smollm2" (the embedded model), a Hugging Face directory
or cached repo id (qrt.hub.load_fp_model), or a quantized checkpoint (config.json with a
quantization_config, through qrt.load_quantized)."""
from __future__ import annotations

import json
import os

import torch

from qrt.hub.resolve import load_fp_model, resolve_model_dir


def load_for_eval(name_or_path: "str | os.PathLike", device: str | None = None, dtype: str | None = None):
    """-> (model in eval mode, tokenizer, description). dtype: None = float32 on CPU and the
    checkpoint's own dtype elsewhere, "auto", or a name: float32 | float16 | bfloat16."""
    from transformers import AutoTokenizer

    root = resolve_model_dir(name_or_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = json.loads((root / "config.json").read_text())
    if config.get("quantization_config") is not None:
        from qrt.hub.load import load_quantized
        model = load_quantized(root, device=device, dtype=dtype, progress=False)
        tok = AutoTokenizer.from_pretrained(root)
        kind = f"quantized checkpoint ({config['quantization_config'].get('quant_method')})"
    else:
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else "auto"
        model, tok = load_fp_model(root, dtype=getattr(torch, dtype) if dtype != "auto" and
                                   isinstance(dtype, str) else dtype)
        model.to(device)
        kind = "floating-point model"
    if tok is None:
        raise ValueError(f"{root}: no tokenizer files; perplexity needs the model's tokenizer")
    return model.eval(), tok, f"{root} [{kind}]"
