"""Perplexity the GPTQ-paper way.

rows = the file's lines -> text = "\\n\\n".join(rows) -> tokenize once -> non-overlapping
windows of L = min(2048, model context) tokens (the ragged tail is dropped) -> each window
predicts its tokens 2..L from the ones before -> ppl = exp(mean token NLL over all windows).
Every window has L-1 predictions, so this equals the paper's exp(mean of window losses).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from qrt.data.text import EVAL_TEXT, gptq_eval_text, read_text, resolve_text_path
from qrt.data.windows import model_context

MAX_WINDOW = 2048


@dataclass(frozen=True)
class PerplexityResult:
    """ppl = exp(nll); nll: mean NLL per predicted token (nats); tokens: predicted tokens;
    window_nlls: each window's mean NLL, in text order (any first-N subset can be re-derived)."""

    ppl: float
    nll: float
    windows: int
    window_len: int
    tokens: int
    text_tokens: int
    window_nlls: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def eval_window_len(model, window: int | None = None) -> int:
    """min(2048, model context), or `window` when given (must fit the context)."""
    ctx = model_context(model)
    if window is None:
        return min(MAX_WINDOW, ctx) if ctx else MAX_WINDOW
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2 tokens, found {window!r}")
    if ctx and window > ctx:
        raise ValueError(f"window {window} exceeds the model context {ctx}")
    return window


def tokenize_eval_text(tokenizer, path: "str | os.PathLike | None" = None) -> torch.Tensor:
    """The evaluation file joined the GPTQ way and tokenized once -> int64 [n_tokens]."""
    text = gptq_eval_text(read_text(resolve_text_path(path, EVAL_TEXT)))
    ids = tokenizer(text, return_tensors="pt").input_ids
    return ids.reshape(-1)


def window_nll(model, ids: torch.Tensor) -> torch.Tensor:
    """Per-window sum of the NLL (float64 [B], nats) of tokens 2..L of windows ids [B, L]."""
    logits = model(ids).logits  # [B, L, vocab]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:], reduction="none")
    return nll.double().sum(dim=1)


@torch.no_grad()
def perplexity(model, token_ids: torch.Tensor, window: int | None = None,
               max_windows: int | None = None, batch_size: int = 1,
               progress: bool = True) -> PerplexityResult:
    """Perplexity of `model` on token_ids [n_tokens] (int64), non-overlapping windows.

    max_windows: evaluate only the first N windows (a fixed, reproducible subset).
    """
    ids = token_ids.reshape(-1)
    L = eval_window_len(model, window)
    n = ids.numel() // L
    if max_windows is not None:
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, found {max_windows}")
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"text has {ids.numel()} tokens, fewer than one window of {L}")
    device = next(model.parameters(), torch.empty(0)).device
    windows = ids[: n * L].reshape(n, L)
    sums = []
    was_training = model.training
    model.eval()
    try:
        for b in tqdm(range(0, n, batch_size), desc=f"ppl ({n} x {L} tokens)", disable=not progress):
            sums.append(window_nll(model, windows[b: b + batch_size].to(device)).cpu())
    finally:
        model.train(was_training)
    per_window = torch.cat(sums) / (L - 1)
    nll = float(per_window.mean())
    return PerplexityResult(ppl=math.exp(nll), nll=nll, windows=n, window_len=L, tokens=n * (L - 1),
                            text_tokens=ids.numel(), window_nlls=tuple(per_window.tolist()))


def perplexity_on_file(model, tokenizer, path: "str | os.PathLike | None" = None,
                       **kwargs) -> PerplexityResult:
    """`perplexity` on a text file (default: the packaged WikiText-2 raw test split)."""
    return perplexity(model, tokenize_eval_text(tokenizer, path), **kwargs)
