"""Whole GPTQ / AWQ checkpoint directories of a tiny random Llama, laid out the way
transformers-era exports are (config.json with `quantization_config`, model.safetensors),
with the tensors of tests/formats/peer_formats.py. Returns the float32 model whose
Linear weights are the float64 oracle's dequantization: the reference to compare with."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from peer_formats import make_awq_layer, make_gptq_layer
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).float().eval()


def write_checkpoint(out: Path, seed: int, quant_config: dict, make_layer) -> LlamaForCausalLM:
    """make_layer(k, n, gen) -> (tensors, w64 [n, k]). Every Linear but lm_head is stored
    quantized; the returned model carries the oracle weights."""
    model = tiny_llama(seed)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            layer, w64 = make_layer(mod.in_features, mod.out_features, gen)
            tensors.update({f"{name}.{k}": v for k, v in layer.items()})
            with torch.no_grad():
                mod.weight.copy_(torch.from_numpy(w64).float())  # exact: see test_gptq_reader.py
    quantized = {n.rsplit(".", 1)[0] for n in tensors}
    for name, t in model.state_dict().items():
        if name.rsplit(".", 1)[0] not in quantized:
            tensors[name] = t.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = quant_config
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return model


def write_gptq_checkpoint(out: Path, seed: int, bits: int, group_size: int, sym: bool, desc_act: bool,
                          fmt: str) -> LlamaForCausalLM:
    cfg = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act,
           "sym": sym, "checkpoint_format": fmt, "damp_percent": 0.01}
    return write_checkpoint(out, seed, cfg, lambda k, n, gen: make_gptq_layer(
        k, n, bits, group_size, sym, desc_act, fmt, False, gen))


def write_awq_checkpoint(out: Path, seed: int, group_size: int) -> LlamaForCausalLM:
    cfg = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}
    return write_checkpoint(out, seed, cfg, lambda k, n, gen: make_awq_layer(k, n, group_size, False, gen))
