"""Our writer judged by the real compressed-tensors package: its config model must accept
our quantization_config, and transformers + compressed-tensors (its own decompressor)
must reproduce our dequantized weights exactly from our files."""
import json

import pytest
import torch

pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from qrt import quantize_model, save_quantized  # noqa: E402
from qrt.runtime.embedding import QuantEmbedding  # noqa: E402
from qrt.runtime.linear import QuantLinear  # noqa: E402
from qrt.schemes import resolve_scheme  # noqa: E402


def decompressed_by_transformers(path):
    """transformers' CompressedTensorsHfQuantizer decompresses on the first forward (the
    path users take; it mis-sizes packed zero points of asymmetric layers in transformers
    5.23 + compressed-tensors 0.20 even for compressed-tensors' own files, so it is used for
    symmetric schemes only)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    return {n: m.weight.detach() for n, m in model.named_modules() if hasattr(m, "weight")}


def decompressed_model_free(path, names):
    """compressed-tensors' own decompressor, called per layer on the tensors of our file."""
    qcfg = QuantizationConfig.model_validate(json.loads((path / "config.json").read_text())["quantization_config"])
    out = {}
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for name in names:
            group = next(g for g in qcfg.config_groups.values() if name in g.targets) \
                if any(name in g.targets for g in qcfg.config_groups.values()) \
                else next(g for g in qcfg.config_groups.values() if "Linear" in g.targets)
            local = {k[len(name) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(name + ".")}
            out[name] = BaseCompressor.get_value_from_registry(group.format).decompress(local, group)["weight"]
    return out


@pytest.mark.parametrize("scheme", ["w4a16", "w4a16-asym", "w8a16", "w8a8", "w3a16", "w2a16-g32"])
def test_compressed_tensors_decompresses_our_weights_exactly(scheme, make_model, tmp_path, rng_seed):
    model = make_model("llama", tmp_path / "fp")
    quantize_model(model, scheme, progress=False)
    save_quantized(model, tmp_path / "q")
    qcfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert QuantizationConfig.model_validate(qcfg).quantization_status == "compressed"
    ours = {n: m.dequantize_weight(torch.float16) for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert len(ours) == 14
    judges = [decompressed_model_free(tmp_path / "q", ours)]
    if resolve_scheme(scheme).symmetric:
        judges.append(decompressed_by_transformers(tmp_path / "q"))
    for theirs in judges:
        for name, w in ours.items():
            # their dequantize may run in fp16 (the scale dtype) or fp32; (q - z) * s is exact
            # in fp32 and one rounding in fp16, so both equal ours rounded to fp16
            torch.testing.assert_close(theirs[name].to(torch.float16), w, rtol=0, atol=0, msg=name)


def test_config_groups_for_adjusted_layers(make_model, tmp_path):
    """in_features 192 with g128: those layers get g64 in their own group listing exact names
    (which win over the class target in compressed-tensors and vLLM); 256-wide down_proj
    stays in the "Linear" group."""
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False)
    info = save_quantized(model, tmp_path / "q")
    qcfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    g1, g0 = qcfg["config_groups"]["group_0"], qcfg["config_groups"]["group_1"]
    assert g0["targets"] == ["Linear"] and g0["weights"]["group_size"] == 128
    assert g1["weights"]["group_size"] == 64 and "model.layers.0.self_attn.q_proj" in g1["targets"]
    assert not any("down_proj" in t for t in g1["targets"])
    assert qcfg["ignore"] == ["lm_head"] and qcfg["format"] == "pack-quantized"
    assert set(info.adjusted) == set(g1["targets"]) and "group size 64" in info.summary()


def test_mixed_formats_make_mixed_precision(make_model, tmp_path):
    model = make_model("llama")
    quantize_model(model, "w8a8", progress=False, quantize_embedding=True)
    save_quantized(model, tmp_path / "q")
    qcfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qcfg["format"] == "mixed-precision"
    assert {g["format"] for g in qcfg["config_groups"].values()} == {"int-quantized", "pack-quantized"}
    QuantizationConfig.model_validate(qcfg)


def test_compressed_tensors_reads_our_int8_embedding(make_model, tmp_path, rng_seed):
    """Their decompressor reproduces our int8 table (transformers itself cannot run such a
    file: its tied lm_head finds no `embed_tokens.weight`; --quantize-embedding files are
    for qrt, documented)."""
    model = make_model("llama", tmp_path / "fp")
    quantize_model(model, "w4a16", progress=False, quantize_embedding=True)
    save_quantized(model, tmp_path / "q")
    theirs = decompressed_model_free(tmp_path / "q", ["model.embed_tokens"])
    emb = model.get_input_embeddings()
    assert isinstance(emb, QuantEmbedding)
    torch.testing.assert_close(theirs["model.embed_tokens"].to(torch.float16),
                               emb.dequantize_weight(torch.float16), rtol=0, atol=0)
