"""Quantization methods over a model: RTN (rtn), GPTQ (gptq: one layer; gptq_model: the
sequential model driver), QAT, static activation observers; plan picks the layers."""
