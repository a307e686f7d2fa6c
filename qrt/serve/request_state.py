"""One request as the serving engine tracks it, and the outputs it hands to the request's sink."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qrt.serve.detok import TextTracker
from qrt.serve.outputs import CompletionOutput, RequestMetrics, RequestOutput
from qrt.serve.sampling import SamplingParams

Sink = Callable[[RequestOutput], None]


@dataclass
class ServeRequest:
    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    text: TextTracker
    sink: Sink
    metrics: RequestMetrics
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False  # set once, under the engine lock: a request gets one final output


def snapshot(req: ServeRequest, finish_reason: str | None, error: str | None = None) -> RequestOutput:
    done = finish_reason is not None
    comp = CompletionOutput(0, req.text.visible(done), list(req.token_ids), finish_reason)
    return RequestOutput(req.request_id, req.prompt, req.prompt_ids, [comp], done, req.metrics, error)


def eos_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids: the generation config's, else the tokenizer's (none negative)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return [i for i in ids if i is not None and i >= 0]
