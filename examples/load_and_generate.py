"""Load a quantized checkpoint with load_quantized and chat with it (tokens streamed).

    python examples/load_and_generate.py [CHECKPOINT_DIR] ["prompt"]
"""
import sys

import torch
from transformers import AutoTokenizer, TextStreamer

from qrt import load_quantized

path = sys.argv[1] if len(sys.argv) > 1 else "smollm2-w4a16"
prompt = sys.argv[2] if len(sys.argv) > 2 else "Give me three tips for learning to cook."

model = load_quantized(path)  # CPU: fp32 compute, int4 weights repacked once for torch's CPU kernel
tokenizer = AutoTokenizer.from_pretrained(path)
ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)["input_ids"]
with torch.inference_mode():
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128, do_sample=False,
                   streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True))
