"""Per-request sampling inside transformers' continuous-batching loop.

transformers' engine picks one mode (argmax or multinomial over a global RNG) for the whole
batch. We run it in argmax mode and plug in `RequestSampler`, a logits processor that, for
each row that samples, applies temperature, top-k and top-p and then adds Gumbel noise drawn
from a generator seeded by (request seed, token index). argmax(logits/T + Gumbel) is an exact
sample from softmax(logits/T) (the Gumbel-max trick), so:
  - greedy rows (temperature 0) are left untouched: plain argmax;
  - a seeded request draws the same tokens whatever else shares its batch.
"""
from __future__ import annotations

import torch

from qrt.serve.cb_compat import ContinuousBatchingLogitsProcessor

from qrt.engine.sampler import RowParams, apply_top_k_top_p, gumbel_noise, sample_row  # noqa: F401

# Keys a request passes through `add_request(**kwargs)` (types checked by transformers).
SAMPLER_KWARGS = {"temperature": float, "top_p": float, "top_k": int, "seed": int}


class RequestSampler(ContinuousBatchingLogitsProcessor):
    """Logits processor for transformers' continuous batching (synchronous mode: the rows
    prepared by `prepare_tensor_args` are the rows of the next `__call__`)."""

    supported_kwargs = SAMPLER_KWARGS
    ignored_kwargs = ()

    def __init__(self):
        self._rows: list[RowParams] = []

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.zero_()  # settings travel in self._rows, not in the tensor

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        rows = []
        for future in requests_with_new_token:
            kw = future.state.logit_processor_kwargs
            rows.append(RowParams(kw.get("temperature", 0.0), kw.get("top_p", 1.0), kw.get("top_k", -1),
                                  kw.get("seed", 0), future.state.generated_len()))
        self._rows = rows
        return torch.zeros(len(rows), dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        """scores [B, V] -> scores to argmax. Row i < len(rows) belongs to the i-th request
        with a new token; transformers pads B up to the requests in the batch (rows of
        requests still mid-prefill are junk it never reads), so B >= len(rows)."""
        if len(self._rows) > scores.shape[0]:
            raise RuntimeError(f"sampler prepared {len(self._rows)} rows, found only {scores.shape[0]} logits rows")
        if all(p.greedy for p in self._rows):
            return scores
        out = scores.clone()
        for i, p in enumerate(self._rows):
            out[i] = sample_row(scores[i], p)
        return out
