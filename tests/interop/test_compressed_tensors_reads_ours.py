"""The writer judge: compressed-tensors' own decompressor must reproduce qrt's dequantized
weights exactly from the files qrt.save_quantized writes. The judge runs compressed-tensors'
load lifecycle itself (apply_quantization_config: its own per-module matching of config
groups; ModelCompressor.compress_model for the compressed layout; load our tensors
strictly; decompress_model), and, for a single-group file, also transformers'
from_pretrained(..., CompressedTensorsConfig(dequantize=True)), the path users take.
(transformers 5.23's dequantize path applies the first config group to every dense layer,
so it cannot read mixed-precision files such as the 576-column fallback below; see
docs/interop.md.)

Exact because both sides compute (q - z) * s with one rounding: compressed-tensors in the
scale's dtype, qrt in float32 then cast. (q - z) is a small integer, so its product with
an fp16 scale is exact in float32 and both round that same number once to fp16. The same
holds for FP8 codes (4 significant bits) times 16-bit scales, and for FP4: e2m1 values
times fp32(scale) / global_scale (NVFP4) or a power of two (MXFP4), in fp32 on both sides.
"""
import json

import pytest
import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, CompressedTensorsConfig, LlamaConfig, LlamaForCausalLM

import qrt
from qrt.runtime.linear import QuantLinear


def tiny_llama(hidden: int, intermediate: int, heads: int, kv_heads: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=96, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=1,
                      num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=32, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).half().eval()


def decompressed_by_compressed_tensors(path) -> torch.nn.Module:
    """compressed-tensors' lifecycle on a fresh model: our config, our tensors, its decompressor."""
    config = AutoConfig.from_pretrained(path)
    qcfg = QuantizationConfig.model_validate(config.quantization_config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    apply_quantization_config(model, qcfg, show_progress=False)
    compressor = ModelCompressor(quantization_config=qcfg)
    compressor.compress_model(model)  # the compressed parameter layout our tensors must fill
    model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
    compressor.decompress_model(model)
    return model


def decompressed_by_transformers(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16,
                                                quantization_config=CompressedTensorsConfig(dequantize=True))


def assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> int:
    """FP4 layers: compressed-tensors' FP4 decompressor returns bfloat16 weights (it unpacks
    to bf16 and dequantizes in fp32); every other format is read into the model's fp16."""
    n = 0
    for name, layer in ours.named_modules():
        if isinstance(layer, QuantLinear):
            w = theirs.get_submodule(name).weight
            fp4 = layer.scheme.is_float and layer.scheme.bits == 4
            assert w.dtype == (torch.bfloat16 if fp4 else torch.float16), name
            assert torch.equal(w, layer.dequantize_weight(w.dtype)), name
            n += 1
    return n


@pytest.mark.parametrize("scheme,fmt", [
    ("w4a16", "pack-quantized"), ("w4a16-asym", "pack-quantized"), ("w8a16", "pack-quantized"),
    ("w2a16", "pack-quantized"), ("w8a8", "int-quantized"), ("fp8", "float-quantized"),
    ("fp8-w", "float-quantized"), ("nvfp4a16", "nvfp4-pack-quantized"), ("mxfp4a16", "mxfp4-pack-quantized")])
def test_compressed_tensors_decompresses_qrt_files_exactly(scheme, fmt, tmp_path, rng_seed):
    model = tiny_llama(128, 256, 4, 2)  # in_features 128 and 256: every group size divides
    qrt.quantize_model(model, scheme)
    qrt.save_quantized(model, tmp_path / "q")
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt
    assert assert_same_weights(model, decompressed_by_compressed_tensors(tmp_path / "q")) == 7
    if scheme in ("w4a16-asym", "fp8"):  # through transformers too (slower: ~3 s each)
        assert assert_same_weights(model, decompressed_by_transformers(tmp_path / "q")) == 7


def test_576_columns_get_a_power_of_two_group_compressed_tensors_reads(tmp_path, rng_seed):
    """SmolLM2's 576-wide layers with g128: written with group 64 as their own config group
    (down_proj, 384 = 3 * 128 inputs, keeps 128); compressed-tensors reads both groups."""
    model = tiny_llama(576, 384, 9, 3)
    qrt.quantize_model(model, "w4a16")
    qrt.save_quantized(model, tmp_path / "q")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert {n: m.scheme.group_size for n, m in layers.items()} == {
        n: (128 if n.endswith("down_proj") else 64) for n in layers}
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert sorted(g["weights"]["group_size"] for g in qc["config_groups"].values()) == [64, 128]
    assert assert_same_weights(model, decompressed_by_compressed_tensors(tmp_path / "q")) == 7


@pytest.mark.parametrize("kind", ["gptq", "awq"])
def test_gptq_and_awq_checkpoints_convert_to_files_compressed_tensors_reads(kind, tmp_path, rng_seed):
    """load_quantized(AutoGPTQ / AutoAWQ dir) then save_quantized: a compressed-tensors
    checkpoint with the same integers and scales (no act-order: see docs/interop.md)."""
    from peer_checkpoints import write_awq_checkpoint, write_gptq_checkpoint
    if kind == "gptq":
        write_gptq_checkpoint(tmp_path / kind, "llama", rng_seed, 4, 32, True, False, "gptq")
    else:
        write_awq_checkpoint(tmp_path / kind, "llama", rng_seed, 32)
    model = qrt.load_quantized(tmp_path / kind, dtype=torch.float16)
    qrt.save_quantized(model, tmp_path / "ct")
    assert assert_same_weights(model, decompressed_by_compressed_tensors(tmp_path / "ct")) == 14
