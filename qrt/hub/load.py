"""Loading a model by name or directory: resolve where it lives (qrt.hub.resolve), then read
it as what it is. load_model is the one entry point of generate, eval, serve and LLM:

  quantized checkpoint (config.json quantization_config: compressed-tensors, GPTQ, AWQ; or
  AutoGPTQ / AutoAWQ's own quantize_config.json / quant_config.json) -> qrt.checkpoint.load
  anything else -> transformers (safetensors only), then moved to the device

Defaults: device cuda when a GPU is present, else cpu; dtype bfloat16 on CUDA and float32
elsewhere (CPU half-precision matmuls are slow).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from qrt.checkpoint.load import load_checkpoint, stored_quant_config
from qrt.checkpoint.skeleton import model_class
from qrt.hub.resolve import resolve_model_dir
from qrt.schemes import FLOAT_DTYPES

DTYPE_NAMES = ("auto", *FLOAT_DTYPES)  # what --dtype takes


def default_device(device=None) -> torch.device:
    """`device` as a torch.device; None: cuda when a GPU is present, else cpu."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def model_dtype(dtype, device: torch.device) -> "torch.dtype | str":
    """None: bfloat16 on CUDA, float32 elsewhere; "auto": the checkpoint's own dtype (kept
    as "auto"); a name in qrt.schemes.FLOAT_DTYPES or a torch.dtype."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype]
    raise ValueError(f"dtype: expected None, a torch.dtype or one of {DTYPE_NAMES}, found {dtype!r}")


def load_model(name_or_path: "str | os.PathLike", device=None, dtype=None, quantize: str | None = None,
               trust_remote_code: bool = False, progress: bool = False) -> tuple[nn.Module, object]:
    """(model in eval mode, tokenizer or None) for a directory, a repo id in the local
    Hugging Face cache, or "smollm2" (the embedded model). quantize: an RTN scheme applied
    on load to an unquantized model ("w4a16"); a quantized checkpoint refuses it."""
    root = resolve_model_dir(name_or_path)
    device = default_device(device)
    dtype = model_dtype(dtype, device)
    if stored_quant_config(root) is not None:
        if quantize is not None:
            raise ValueError(f"quantize: {root} is already quantized; expected quantize=None, found {quantize!r}")
        model = load_checkpoint(root, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                progress=progress)
        return model.eval(), _tokenizer(root, trust_remote_code)
    model, tok = load_fp_model(root, dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device)
    if quantize is not None:
        from qrt.quantize.rtn import quantize_model
        quantize_model(model, quantize, progress=progress)
    return model.eval(), tok


def load_quantized(repo_id_or_path: "str | os.PathLike", device=None, dtype=None, device_map=None,
                   trust_remote_code: bool = False, progress: bool = True,
                   allow_unused_tensors: bool = False) -> nn.Module:
    """Load a quantized checkpoint (compressed-tensors, GPTQ, AWQ) for inference from a
    directory or a repo id in the local Hugging Face cache.

    device: "cpu", "cuda", ... (default: cuda if available). dtype: compute dtype, see
    qrt.checkpoint.load.resolve_dtype. device_map: None, "auto" or an accelerate device map,
    dispatched through accelerate (the model is staged on the CPU first). Malformed configs
    raise qrt.CheckpointConfigError (a ValueError naming file, field, expected and found);
    allow_unused_tensors: see qrt.checkpoint.load.load_checkpoint.
    """
    return load_checkpoint(resolve_model_dir(repo_id_or_path), device=device, dtype=dtype,
                           device_map=device_map, trust_remote_code=trust_remote_code, progress=progress,
                           allow_unused_tensors=allow_unused_tensors)


def load_fp_model(name_or_path=None, dtype="auto", trust_remote_code: bool = False):
    """(model, tokenizer or None) of an unquantized checkpoint, via transformers
    (safetensors only; dtype "auto" keeps the checkpoint's own dtype)."""
    import transformers

    root = resolve_model_dir(name_or_path)
    if stored_quant_config(root) is not None:
        raise ValueError(f"{root} is already quantized (it has a quantization_config or an AutoGPTQ/AutoAWQ "
                         "quantize config); expected an unquantized model (load it with qrt.hub.load_model)")
    config = transformers.AutoConfig.from_pretrained(root, trust_remote_code=trust_remote_code)
    cls = model_class(config, trust_remote_code)
    kw = {"trust_remote_code": trust_remote_code} if cls.__name__.startswith("Auto") else {}
    model = cls.from_pretrained(root, dtype=dtype, use_safetensors=True, **kw)
    return model.eval(), _tokenizer(root, trust_remote_code)


def _tokenizer(root, trust_remote_code: bool):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(root, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # no tokenizer files: the model can still be quantized or run on token ids


def require_tokenizer(tokenizer, name_or_path, why: str):
    """`tokenizer`, or ValueError saying that `name_or_path` has no tokenizer files and `why` it needs one."""
    if tokenizer is None:
        raise ValueError(f"{name_or_path}: no tokenizer files (tokenizer.json / tokenizer_config.json); {why}")
    return tokenizer
