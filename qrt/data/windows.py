"""Calibration samples: `nsamples` random windows of `seqlen` tokens from a text.

The text is a file (default: the packaged WikiText-2 validation split, never the test
split) or a list of strings joined by blank lines; it is tokenized once and window starts
are drawn uniformly with a seeded generator, so the same (text, tokenizer, seed) always
gives the same samples.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from qrt.data.text import CALIB_TEXT, read_text, resolve_text_path


def calibration_text(calib: "str | os.PathLike | Sequence[str] | None") -> str:
    """The calibration text: a file's contents (None -> the packaged default) or the
    strings of a list joined by blank lines."""
    if calib is None or isinstance(calib, (str, os.PathLike)):
        return read_text(resolve_text_path(calib, CALIB_TEXT))
    texts = list(calib)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("calib must be a file path or a non-empty list of strings, "
                         f"found {type(calib).__name__} of {len(texts)} items")
    return "\n\n".join(texts)


def sample_windows(token_ids: torch.Tensor, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """nsamples random windows of seqlen tokens from token_ids [n] -> int64 [nsamples, seqlen]."""
    if nsamples < 1 or seqlen < 1:
        raise ValueError(f"nsamples and seqlen must be >= 1, found {nsamples} and {seqlen}")
    ids = token_ids.reshape(-1)
    if ids.numel() < seqlen:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than seqlen={seqlen}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen + 1, (nsamples,), generator=gen)
    return torch.stack([ids[s: s + seqlen] for s in starts.tolist()])


def calibration_windows(tokenizer, calib=None, nsamples: int = 128, seqlen: int = 512,
                        seed: int = 0) -> torch.Tensor:
    """Tokenize the calibration text once and draw windows -> int64 [nsamples, seqlen]."""
    text = calibration_text(calib)
    ids = tokenizer(text, return_tensors="pt").input_ids
    return sample_windows(ids, nsamples, seqlen, seed)


def model_context(model) -> int | None:
    """The model's maximum sequence length from its config, if it states one."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
