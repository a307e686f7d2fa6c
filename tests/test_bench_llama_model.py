"""The decode benchmark's Llama (bench/llama_model.py) computes what transformers'
LlamaForCausalLM computes on the same weights: prefill logits and cached decode steps."""
import sys
from pathlib import Path

import torch

_BENCH = str(Path(__file__).resolve().parent.parent / "bench")
sys.path.insert(0, _BENCH)  # bench/ is scripts, not a package; leave sys.path as found
try:
    from llama_model import build_model, llama3_8b_config
finally:
    sys.path.remove(_BENCH)

TINY = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            num_hidden_layers=2, vocab_size=101)


def _hf_twin(model, cfg):
    from transformers import LlamaForCausalLM
    cfg._attn_implementation = "eager"
    hf = LlamaForCausalLM(cfg).eval()
    sd = {("model." + k if not k.startswith("lm_head") else k): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return hf


def test_llama_decoder_matches_transformers(rng_seed):
    cfg = llama3_8b_config(**TINY)
    model = build_model(cfg, torch.device("cpu"), torch.float32, seed=rng_seed)
    for p in model.parameters():  # RMSNorm weights start at 1: make them random too
        p.data.normal_(0, 0.5).add_(p.data.new_ones(()) if p.ndim == 1 else 0)
    hf = _hf_twin(model, cfg)
    ids = torch.randint(0, cfg.vocab_size, (3, 7))
    model.setup_cache(3, 16)
    with torch.no_grad():
        ours = model(ids[:, :6], torch.arange(6))
        step = model(ids[:, 6:], torch.tensor([6]))  # one cached decode step
        ref = hf(ids).logits
    # float32 throughout; the two differ only in summation order (~1e-6 relative)
    tol = 1e-4
    assert (ours - ref[:, :6]).norm() / ref[:, :6].norm() < tol
    assert (step - ref[:, 6:]).norm() / ref[:, 6:].norm() < tol
