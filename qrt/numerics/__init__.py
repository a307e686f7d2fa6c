"""Integer quantization math on plain tensors: qparams, quantize/dequantize, int32 packing,
act-order column permutations. Imports nothing else from qrt but schemes."""
