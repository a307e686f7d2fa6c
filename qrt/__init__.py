"""qrt: a quantized LLM inference runtime on Triton kernels.

Public names are imported lazily, so `import qrt` stays cheap and optional extras
(serving, evaluation) are only imported when used.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QuantScheme": "qrt.schemes",
    "ActivationScheme": "qrt.schemes",
    "resolve_scheme": "qrt.schemes",
    "PRESETS": "qrt.schemes",
    "QuantLinear": "qrt.runtime.linear",
    "use_backend": "qrt.runtime.linear",
    "quantize_model": "qrt.quantize.rtn",
    "save_quantized": "qrt.checkpoint.save",
    "load_quantized": "qrt.hub.load",
    "load_model": "qrt.hub.load",
    "CheckpointConfigError": "qrt.formats.validate",
    "LLM": "qrt.serve.llm",
    "SamplingParams": "qrt.serve.sampling",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qrt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
