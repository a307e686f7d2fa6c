"""Quantization: RTN primitives and packing (GPTQ, observers and QAT build on these)."""
from qrt.quantize.packing import pack_int32, packed_words, unpack_int32
from qrt.quantize.primitives import (QuantizedWeight, compute_qparams, dequantize, expand_groups,
                                     fake_quantize, quantize, quantize_weight)

__all__ = ["QuantizedWeight", "compute_qparams", "dequantize", "expand_groups", "fake_quantize",
           "pack_int32", "packed_words", "quantize", "quantize_weight", "unpack_int32"]
