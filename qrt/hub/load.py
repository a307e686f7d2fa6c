"""Loading a model by name: resolve where it lives (qrt.hub.resolve), then read it."""
from __future__ import annotations

import os

from torch import nn

from qrt.checkpoint.load import load_checkpoint
from qrt.hub.resolve import resolve_model_dir


def load_quantized(repo_id_or_path: "str | os.PathLike | None" = "smollm2", device=None, dtype=None,
                   device_map=None, trust_remote_code: bool = False, progress: bool = True,
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
