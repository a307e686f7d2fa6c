"""Serving: continuous batching with a paged KV cache (`LLM`, `Engine`), an
OpenAI-compatible HTTP server (`qrt serve`) and a load generator (`qrt bench serve`).

Names are imported lazily: SamplingParams alone must not pull in transformers or FastAPI.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "LLM": "qrt.serve.llm",
    "SamplingParams": "qrt.serve.sampling",
    "Engine": "qrt.serve.engine",
    "QueueFullError": "qrt.serve.engine",
    "EngineConfig": "qrt.serve.config",
    "RequestOutput": "qrt.serve.outputs",
    "CompletionOutput": "qrt.serve.outputs",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qrt.serve' has no attribute {name!r}")


__all__ = list(_EXPORTS)
