"""Quantize a model to W4A16 and save a compressed-tensors checkpoint that vLLM and qrt load.

    python examples/quantize_and_save.py [MODEL_DIR_OR_CACHED_REPO_ID] [OUT_DIR]
"""
import sys

from qrt import quantize_model, save_quantized
from qrt.hub.resolve import load_fp_model

source = sys.argv[1] if len(sys.argv) > 1 else "smollm2"  # the embedded SmolLM2-135M-Instruct
out = sys.argv[2] if len(sys.argv) > 2 else "smollm2-w4a16"

model, tokenizer = load_fp_model(source)
quantize_model(model, "w4a16", ignore=["lm_head"])  # RTN, group size 128 (64 where 128 does not divide)
saved = save_quantized(model, out, tokenizer=tokenizer)
print(saved.summary())
