"""Where models live (a local directory, the local Hugging Face cache, the embedded
SmolLM2) and loading one by name: load_model for any model, load_quantized for a
quantized checkpoint, load_fp_model for an unquantized one."""
from qrt.hub.load import load_fp_model, load_model, load_quantized
from qrt.hub.resolve import resolve_model_dir

__all__ = ["load_model", "load_quantized", "load_fp_model", "resolve_model_dir"]
