"""SamplingParams: how one request turns logits into tokens, and when it stops.

A frozen dataclass validated on construction (field names follow vLLM/OpenAI so server
requests map one to one). temperature == 0 means greedy (argmax); otherwise tokens are
sampled from softmax(logits / temperature) restricted by top_k and top_p.

Temperatures below TEMPERATURE_FLOOR are greedy and stored as 0.0: logits / 1e-40 overflows
float32 to inf (and inf - inf = nan in the softmax), while any temperature under 1e-5 already
puts all the probability on the argmax for logit gaps above ~1e-3 (exp(-1e-3 / 1e-5) = e^-100).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

TEMPERATURE_FLOOR = 1e-5  # below it sampling is greedy (see the module docstring)


def _bad(field_name: str, expected: str, found) -> ValueError:
    return ValueError(f"invalid sampling parameter '{field_name}': expected {expected}, found {found!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class SamplingParams:
    """temperature: >= 0; 0 (or anything below TEMPERATURE_FLOOR, stored as 0.0) is greedy.  top_p: in (0, 1].  top_k: -1 (off) or >= 1.
    max_tokens: new tokens to generate, >= 1.  stop: strings that end the output (not included).
    seed: makes sampling reproducible per request, whatever else is batched with it.
    ignore_eos: keep generating past the end-of-sequence token (benchmarks use it)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise _bad("temperature", "a finite number >= 0", self.temperature)
        if self.temperature < TEMPERATURE_FLOOR:
            object.__setattr__(self, "temperature", 0.0)
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise _bad("top_p", "a number in (0, 1]", self.top_p)
        if not _is_int(self.top_k) or (self.top_k < 1 and self.top_k != -1):
            raise _bad("top_k", "-1 (disabled) or an int >= 1", self.top_k)
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise _bad("max_tokens", "an int >= 1", self.max_tokens)
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise _bad("stop", "a string or a list of non-empty strings", self.stop)
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise _bad("seed", "None or an int in [0, 2**63)", self.seed)
        if not isinstance(self.ignore_eos, bool):
            raise _bad("ignore_eos", "a bool", self.ignore_eos)

    @property
    def greedy(self) -> bool:
        """Argmax decoding: temperature 0, or top_k 1 (the same token either way)."""
        return self.temperature == 0 or self.top_k == 1
