"""EngineConfig: the knobs of the continuous-batching engine, validated on construction."""
from __future__ import annotations

import math
from dataclasses import dataclass


def _require(cond: bool, name: str, expected: str, found) -> None:
    if not cond:
        raise ValueError(f"invalid engine setting '{name}': expected {expected}, found {found!r}")


@dataclass(frozen=True)
class EngineConfig:
    """max_model_len: prompt + generated tokens of one request (None: the model's context,
      capped at 2048 so the default KV cache stays small on a CPU).
    max_num_seqs: requests decoded together in one forward (the batch width).
    max_waiting: requests admitted beyond the running ones; more are refused (HTTP 429).
    max_batch_tokens: tokens per forward; long prefills are split into chunks of this size.
    page_size: tokens per KV-cache block.
    kv_cache_mb: KV-cache budget in MiB when num_blocks is None.
    num_blocks: KV-cache blocks (whole-model blocks of page_size tokens); overrides kv_cache_mb.
    prefix_caching: share KV blocks of identical prompt prefixes across requests.
    num_threads: torch intra-op threads of the generation loop (None: the caller's count).
    batch_invariant: on the CPU, attention in float64 (qrt.engine.attention's twin), so a request's
      rounding does not depend on how its prompt was chunked; False: the fp32 torch path. Each
      sequence attends only to its own keys either way."""

    max_model_len: int | None = None
    max_num_seqs: int = 32
    max_waiting: int = 64
    max_batch_tokens: int = 512
    page_size: int = 32
    kv_cache_mb: int = 512
    num_blocks: int | None = None
    prefix_caching: bool = True
    num_threads: int | None = None
    batch_invariant: bool = True

    def __post_init__(self):
        for name in ("max_num_seqs", "max_batch_tokens", "page_size", "kv_cache_mb"):
            v = getattr(self, name)
            _require(isinstance(v, int) and v >= 1, name, "an int >= 1", v)
        _require(isinstance(self.max_waiting, int) and self.max_waiting >= 0, "max_waiting", "an int >= 0",
                 self.max_waiting)
        for name in ("max_model_len", "num_blocks", "num_threads"):
            v = getattr(self, name)
            _require(v is None or (isinstance(v, int) and v >= 1), name, "None or an int >= 1", v)

    def resolve_max_model_len(self, model_config) -> int:
        """Context limit for the model: ours if set (never above the model's), else min(model's, 2048)."""
        model_max = getattr(model_config, "max_position_embeddings", None) or 2048
        if self.max_model_len is None:
            return min(model_max, 2048)
        if self.max_model_len > model_max:
            raise ValueError(f"max_model_len {self.max_model_len} exceeds the model's context of {model_max} tokens")
        return self.max_model_len

    def resolve_num_blocks(self, model_config, dtype_bytes: int, max_model_len: int) -> int:
        """KV blocks: num_blocks if set, else what kv_cache_mb holds; at least one full-length request."""
        need = math.ceil(max_model_len / self.page_size)
        if self.num_blocks is not None:
            if self.num_blocks < need:
                raise ValueError(f"num_blocks {self.num_blocks} x page_size {self.page_size} holds fewer tokens "
                                 f"than max_model_len {max_model_len}; expected num_blocks >= {need}")
            return self.num_blocks
        c = model_config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        bytes_per_token = 2 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes  # K and V
        return max(need, self.kv_cache_mb * 2**20 // (bytes_per_token * self.page_size))


@dataclass(frozen=True)
class ServerConfig:
    """Limits of the HTTP layer, so that no single request can stall or exhaust the server.

    max_body_bytes: largest request body; a larger one is refused with 413 before it is read
      (by its Content-Length, or while it streams in when there is none).
    max_prompt_chars: longest prompt (or sum of chat message contents) in characters, checked
      before tokenizing; None: 64 characters per token of the engine's max_model_len (a generous
      bound: typical BPE tokens are 3-5 characters, so a longer prompt would not fit anyway).
    request_timeout_s: per-request deadline from arrival; past it the request is aborted (its
      KV blocks are freed) and answered 408. None: no deadline."""

    max_body_bytes: int = 4 * 2**20
    max_prompt_chars: int | None = None
    request_timeout_s: float | None = 600.0

    def __post_init__(self):
        _require(isinstance(self.max_body_bytes, int) and not isinstance(self.max_body_bytes, bool)
                 and self.max_body_bytes >= 1024, "max_body_bytes", "an int >= 1024", self.max_body_bytes)
        _require(self.max_prompt_chars is None or (isinstance(self.max_prompt_chars, int)
                                                   and self.max_prompt_chars >= 1),
                 "max_prompt_chars", "None or an int >= 1", self.max_prompt_chars)
        t = self.request_timeout_s
        _require(t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0),
                 "request_timeout_s", "None or a finite number of seconds > 0", t)

    def prompt_char_limit(self, max_model_len: int) -> int:
        return self.max_prompt_chars if self.max_prompt_chars is not None else 64 * max_model_len
