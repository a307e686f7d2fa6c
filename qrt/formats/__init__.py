"""Checkpoint formats: compressed-tensors (read/write), GPTQ and AWQ (read)."""
