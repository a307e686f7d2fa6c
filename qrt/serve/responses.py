"""OpenAI response bodies and server-sent-event chunks for completions and chat."""
from __future__ import annotations

import json
import time
import uuid

from qrt.serve.outputs import RequestOutput


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(out: RequestOutput) -> dict:
    p, c = len(out.prompt_token_ids), out.num_generated
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def sse(payload: dict | str) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


class ResponseFormat:
    """Builds the bodies of one endpoint: kind is "completion" or "chat"."""

    def __init__(self, kind: str, model: str):
        self.kind, self.model = kind, model
        self.id = new_id("cmpl" if kind == "completion" else "chatcmpl")
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices,
                **extra}

    def full(self, out: RequestOutput) -> dict:
        """The non-streaming response."""
        c = out.outputs[0]
        if self.kind == "completion":
            choice = {"index": 0, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
            return self._envelope("text_completion", [choice], usage=usage(out))
        choice = {"index": 0, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                  "finish_reason": c.finish_reason}
        return self._envelope("chat.completion", [choice], usage=usage(out))

    def first_chunk(self) -> dict | None:
        """Chat streams open with the assistant role (OpenAI does the same)."""
        if self.kind == "completion":
            return None
        return self._envelope("chat.completion.chunk",
                              [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}])

    def chunk(self, delta: str, finish_reason: str | None) -> dict:
        if self.kind == "completion":
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("text_completion", [choice])
        body = {"content": delta} if delta else {}
        choice = {"index": 0, "delta": body, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])

    def usage_chunk(self, out: RequestOutput) -> dict:
        """The last chunk when stream_options.include_usage: no choices, the usage."""
        obj = "text_completion" if self.kind == "completion" else "chat.completion.chunk"
        return self._envelope(obj, [], usage=usage(out))
