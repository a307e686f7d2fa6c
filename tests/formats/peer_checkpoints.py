"""Whole GPTQ / AWQ checkpoint directories of a tiny random model, laid out the way
transformers-era exports are (config.json with `quantization_config`, model.safetensors),
with the tensors of tests/formats/peer_formats.py. Returns the float32 model whose
Linear weights are the float64 oracle's dequantization: the reference to compare with."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from peer_formats import make_awq_layer, make_gptq_layer
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}  # qwen2: q/k/v bias


def tiny_model(family: str, seed: int) -> torch.nn.Module:
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    cfg = config_cls(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     tie_word_embeddings=False)
    model = model_cls(cfg).float().eval()
    with torch.no_grad():  # HF zero-initializes biases: make them count
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.1)
    return model


def write_checkpoint(out: Path, family: str, seed: int, quant_config: dict, make_layer,
                     autogptq_layout: bool = False) -> torch.nn.Module:
    """make_layer(k, n, gen) -> (tensors, w64 [n, k]). Every Linear but lm_head is stored
    quantized (its bias, if any, stays a float tensor); the returned model carries the
    oracle weights. autogptq_layout: as AutoGPTQ's save_quantized writes it: settings in
    quantize_config.json (none in config.json), weights in gptq_model-<b>bit-<g>g.safetensors."""
    model = tiny_model(family, seed)
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
        module, _, leaf = name.rpartition(".")
        if not (module in quantized and leaf == "weight"):
            tensors[name] = t.half() if t.is_floating_point() else t  # 16-bit, like real exports
    out.mkdir(parents=True, exist_ok=True)
    fname = "model.safetensors"
    if autogptq_layout:
        fname = f"gptq_model-{quant_config['bits']}bit-{quant_config['group_size']}g.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / fname, metadata={"format": "pt"})
    with torch.no_grad():  # the reference sees exactly what the file holds
        for name, t in model.state_dict().items():
            if name in tensors and t.is_floating_point():
                t.copy_(tensors[name].float())
    config = model.config.to_dict()
    if autogptq_layout:
        settings = {k: v for k, v in quant_config.items() if k != "quant_method"}
        (out / "quantize_config.json").write_text(json.dumps(settings, indent=2))
    else:
        config["quantization_config"] = quant_config
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return model


def write_gptq_checkpoint(out: Path, family: str, seed: int, bits: int, group_size: int, sym: bool,
                          desc_act: bool, fmt: str, autogptq_layout: bool = False) -> torch.nn.Module:
    cfg = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act,
           "sym": sym, "checkpoint_format": fmt, "damp_percent": 0.01}
    return write_checkpoint(out, family, seed, cfg, lambda k, n, gen: make_gptq_layer(
        k, n, bits, group_size, sym, desc_act, fmt, gen), autogptq_layout)


def write_awq_checkpoint(out: Path, family: str, seed: int, group_size: int) -> torch.nn.Module:
    cfg = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}
    return write_checkpoint(out, family, seed, cfg, lambda k, n, gen: make_awq_layer(k, n, group_size, gen))


def dequantize_in_place(model: torch.nn.Module) -> torch.nn.Module:
    """Swap every QuantLinear for an nn.Linear holding its dequantized weight (its own
    dtype) and bias: the loaded model with the reading checked and the kernels taken out."""
    from qrt.formats.targets import set_submodule
    from qrt.runtime.linear import QuantLinear

    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]:
        dense = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                dtype=layer.dtype)
        with torch.no_grad():
            dense.weight.copy_(layer.dequantize_weight())
            if layer.bias is not None:
                dense.bias.copy_(layer.bias)
        set_submodule(model, name, dense)
    return model
