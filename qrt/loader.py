"""The checkpoint API in one import: quantize_model (qrt.convert), save_quantized
(qrt.save), load_quantized (qrt.load)."""
from qrt.convert import QuantizationRecord, quantize_model
from qrt.load import load_quantized
from qrt.save import SavedCheckpoint, save_quantized

__all__ = ["quantize_model", "save_quantized", "load_quantized", "QuantizationRecord", "SavedCheckpoint"]
