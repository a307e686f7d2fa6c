"""Where a model lives: the embedded SmolLM2, a local directory, or a repo id already in
the local Hugging Face cache. qrt never downloads (this runtime works offline)."""
from __future__ import annotations

import os
from pathlib import Path

from qrt.formats.validate import read_checkpoint_config

EMBEDDED_NAMES = (None, "", "smollm2", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")


def resolve_model_dir(name_or_path: "str | os.PathLike | None") -> Path:
    """A directory holding config.json: "smollm2" (or None) -> the embedded model,
    materialized once; an existing directory; or a repo id resolved from the local Hugging
    Face cache without network. Raises FileNotFoundError saying what was tried, and
    qrt.CheckpointConfigError if its config.json (or quantization settings) is malformed."""
    root = _find_model_dir(name_or_path)
    read_checkpoint_config(root)  # one validation pass, before any command reads the config
    return root


def _find_model_dir(name_or_path) -> Path:
    if name_or_path in EMBEDDED_NAMES:
        from qrt.hub.embedded import smollm2_dir
        if name_or_path and Path(str(name_or_path)).is_dir():
            return Path(name_or_path)
        return smollm2_dir()
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} is a directory but has no config.json; expected a Hugging Face "
                                    "model directory")
        return p
    if p.exists():
        raise FileNotFoundError(f"{p} is a file; expected a model directory or a repo id")
    return _from_hf_cache(str(name_or_path))


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as e:  # not cached, or not a valid repo id
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local directory nor a repo id in the local Hugging Face cache "
            f"({HF_HUB_CACHE}); qrt does not download. Fetch it first (huggingface-cli download "
            f"{repo_id}) or pass a directory. ({type(e).__name__})") from None
