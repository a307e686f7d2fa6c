"""GPTQ-quantize the embedded SmolLM2-135M to W4A16 (act order "weight", calibrated on the
packaged WikiText-2 validation split), save a compressed-tensors checkpoint, reload it and
measure perplexity on the first 8 windows of WikiText-2 test.

  PYTHONPATH=.dev python examples/gptq_smollm2.py      # ~10 CPU-minutes of GPTQ on 2 cores
CLI equivalent:
  qrt quantize smollm2 --scheme w4a16 --method gptq --out smollm2-w4a16-gptq
  qrt eval ppl smollm2-w4a16-gptq --max-windows 8
"""
import torch

import qrt
from qrt.eval.ppl import perplexity_on_file
from qrt.hub.resolve import load_fp_model
from qrt.quantize.gptq_model import gptq_quantize_model

model, tokenizer = load_fp_model("smollm2", dtype=torch.float32)
gptq_quantize_model(model, tokenizer, "w4a16", nsamples=128, seqlen=512, actorder="weight")
print(qrt.save_quantized(model, "smollm2-w4a16-gptq", tokenizer=tokenizer).summary())

model = qrt.load_quantized("smollm2-w4a16-gptq", device="cpu")
print(perplexity_on_file(model, tokenizer, max_windows=8))
