"""What the engine hands back for a request (names follow vLLM's RequestOutput)."""
from __future__ import annotations

from dataclasses import dataclass, field

# finish_reason values: "stop" (EOS or a stop string), "length" (max_tokens reached),
# "abort" (cancelled, e.g. the client went away), "error" (the engine failed it).


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class RequestMetrics:
    """perf_counter() timestamps in seconds."""

    arrival_time: float
    first_token_time: float | None = None
    finished_time: float | None = None
    token_times: list[float] = field(default_factory=list)


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    error: str | None = None

    @property
    def num_generated(self) -> int:
        return len(self.outputs[0].token_ids)
