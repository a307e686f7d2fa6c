"""The decoders qrt's engine implements, by Hugging Face model_type."""
from torch import nn

from qrt.engine.models.gemma3 import Gemma3ForCausalLM
from qrt.engine.models.llama import LLAMA_MODEL_TYPES, LlamaForCausalLM, UnsupportedModelError

MODEL_REGISTRY: dict[str, type[LlamaForCausalLM]] = {
    **{t: LlamaForCausalLM for t in LLAMA_MODEL_TYPES},
    **{t: Gemma3ForCausalLM for t in Gemma3ForCausalLM.MODEL_TYPES},
}
SUPPORTED_MODEL_TYPES = tuple(MODEL_REGISTRY)


def model_class(hf_model: nn.Module) -> type[LlamaForCausalLM]:
    """The decoder class for hf_model; UnsupportedModelError naming the supported model types."""
    mtype = getattr(getattr(hf_model, "config", None), "model_type", None)
    cls = MODEL_REGISTRY.get(mtype)
    if cls is None:
        raise UnsupportedModelError(f"model_type {mtype!r} ({type(hf_model).__name__}) is not supported by qrt's "
                                    f"engine; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    cls.check(hf_model)
    return cls


def check_supported(hf_model: nn.Module) -> None:
    """Raise UnsupportedModelError unless the engine implements this model exactly."""
    model_class(hf_model)


def build_model(hf_model: nn.Module, max_positions: int, lm_head: str = "model") -> LlamaForCausalLM:
    return model_class(hf_model)(hf_model, max_positions, lm_head=lm_head)


__all__ = ["SUPPORTED_MODEL_TYPES", "Gemma3ForCausalLM", "LlamaForCausalLM", "UnsupportedModelError",
           "build_model", "check_supported", "model_class"]
