"""The smallest SmolLM2 checkpoint: W4A16 Linear layers plus the (tied) embedding as int8 per
row, shared by the lookup and the output projection. qrt-only: vLLM and transformers
expect a floating-point embedding.

    python examples/smallest_checkpoint.py [OUT_DIR]
"""
import sys

from qrt import load_quantized, quantize_model, save_quantized
from qrt.checkpoint.info import checkpoint_info
from qrt.hub.resolve import load_fp_model

out = sys.argv[1] if len(sys.argv) > 1 else "smollm2-w4a16-int8emb"
model, tokenizer = load_fp_model("smollm2")
quantize_model(model, "w4a16", quantize_embedding=True)
save_quantized(model, out, tokenizer=tokenizer)
info = checkpoint_info(out)
print(f"{info.file_bytes / 1e6:.1f} MB = {info.ratio_vs_fp16:.3f}x the fp16 checkpoint")
model = load_quantized(out)
print(type(model.model.embed_tokens).__name__, "shared with lm_head:",
      model.lm_head.weight_packed is model.model.embed_tokens.weight_packed)
