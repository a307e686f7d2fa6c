"""OpenAI-compatible request bodies (pydantic), validated field by field so a bad request
gets a 400 naming the field. Only what qrt implements is accepted with a meaning; unknown
fields are ignored the way OpenAI-compatible servers usually do (the body-size limit bounds them).

Types are strict (pydantic strict mode): no bool for an int or a number, no string for a
number, token ids are ints; numbers may be ints where a float is expected, and an integral
float (4.0) is an int, as in JSON Schema (so the OpenAPI document and the server agree).
Text must be valid Unicode: a lone surrogate ("\\ud800") is a 400 naming the field."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from qrt.serve.sampling import SamplingParams


def _integral(v):
    """4.0 -> 4 (JSON Schema's integer); anything else goes to the strict int check unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**63 else v


def _int(**limits):
    """A strict int field that takes integral floats; limits (ge, lt, ...) are in its schema."""
    return Annotated[int, Field(**limits), BeforeValidator(_integral)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


def _unicode(text: str) -> str:
    """`text` if it encodes to UTF-8; a ValueError naming the first lone surrogate otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"expected valid Unicode text, found a lone surrogate {text[e.start]!r} at "
                         f"character {e.start}") from None
    return text


def _text(v):
    """Before str validation: a lone surrogate is named here (pydantic would only say 'unable to parse')."""
    return _unicode(v) if isinstance(v, str) else v


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingFields(_Strict):
    model: str | None = None
    max_tokens: _int(ge=1) | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: _int(ge=-1) = -1
    stop: str | list[str] | None = None
    seed: _int(ge=0, lt=2**63) | None = None
    n: _int(ge=1, le=1) = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v == 0:
            raise ValueError("top_k must be -1 (disabled) or >= 1")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop must be up to 4 non-empty strings")
        for s in stops:
            _unicode(s)
        return v

    def sampling_params(self, default_max_tokens: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_tokens=self.max_tokens or default_max_tokens, stop=tuple(stop),
                              seed=self.seed, ignore_eos=self.ignore_eos)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingFields):
    """POST /v1/completions. prompt: a string or one list of token ids."""

    prompt: Annotated[str, Field(min_length=1), BeforeValidator(_text)] | \
        Annotated[list[_int(ge=0)], Field(min_length=1)]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, v: str) -> str:
        return _unicode(v)


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions (max_completion_tokens is the newer name of max_tokens)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: _int(ge=1) | None = None

    def sampling_params(self, default_max_tokens: int) -> SamplingParams:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return super().sampling_params(default_max_tokens)


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error",
               code: int = 400) -> dict:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(BaseModel):
    """The body of every error response (OpenAI's shape), for the OpenAPI document."""

    error: ErrorDetail
