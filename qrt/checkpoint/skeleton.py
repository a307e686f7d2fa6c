"""A model with no weights yet: built from its config with parameters on the meta device.

Buffers are created for real (accelerate's init_empty_weights(include_buffers=False)), so
the non-persistent ones that no checkpoint holds (RoPE inv_freq, BERT position_ids,
Gemma3's embed_scale) are computed by the model's own __init__, exactly as
from_pretrained would compute them.
"""
from __future__ import annotations

from pathlib import Path

import torch
import transformers
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoConfig
from transformers.initialization import no_init_weights


def load_config(root: Path, trust_remote_code: bool = False):
    """The model config without its quantization_config (qrt handles that itself; leaving
    it would make transformers look for its own quantizer)."""
    config = AutoConfig.from_pretrained(root, trust_remote_code=trust_remote_code)
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    return config


def model_class(config, trust_remote_code: bool = False):
    """The class named by config.architectures, else the causal-LM auto class."""
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if getattr(config, "auto_map", None) and not trust_remote_code:
        raise ValueError("this model's code lives in its repository (config.auto_map); pass "
                         "trust_remote_code=True to run it")
    return transformers.AutoModelForCausalLM


def build_skeleton(config, dtype: torch.dtype, trust_remote_code: bool = False) -> nn.Module:
    """Model from `config`: parameters on meta in `dtype`, buffers real on the CPU."""
    cls = model_class(config, trust_remote_code)
    # no_init_weights: random init of parameters that are all loaded next is wasted work
    # (0.3 s of SmolLM2's load); buffers still come from each module's own __init__
    with init_empty_weights(include_buffers=False), no_init_weights():
        if cls.__name__.startswith("Auto"):
            model = cls.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            model = cls._from_config(config, dtype=dtype)
    return model.eval()


def set_tensor(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace parameter or buffer `name` of `module` (no copy; parameters frozen)."""
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[name] = tensor


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of parameters/buffers still on the meta device (i.e. never loaded)."""
    out = []
    for mname, m in model.named_modules():
        for k, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None and t.device.type == "meta":
                out.append(f"{mname}.{k}" if mname else k)
    return out
