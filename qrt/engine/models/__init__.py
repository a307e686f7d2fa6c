"""Decoder implementations of the model runner, one module per family."""
from qrt.engine.models.llama import SUPPORTED_MODEL_TYPES, LlamaForCausalLM, check_supported

__all__ = ["SUPPORTED_MODEL_TYPES", "LlamaForCausalLM", "check_supported"]
