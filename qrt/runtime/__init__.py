"""Quantized layers at run time: QuantLinear, QuantEmbedding, and the backends that repack
and run them (weight-only, int8 activations, torch CPU packed kernels)."""
