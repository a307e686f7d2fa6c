"""The `qrt quantize / info / generate` commands on a tiny model with its own tokenizer."""
import json

import pytest
import torch
from tiny_models import save_tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from qrt import load_quantized
from qrt.cli import main


@pytest.fixture
def tiny_dir(make_model, tmp_path):
    make_model("llama", tmp_path / "fp")
    save_tiny_tokenizer(tmp_path / "fp")
    return tmp_path / "fp"


def test_quantize_info_generate(tiny_dir, tmp_path, capsys, rng_seed):
    out = tmp_path / "q"
    assert main(["quantize", str(tiny_dir), "--scheme", "w4a16", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "use group size 64 in their own config group" in said and "x the fp16 checkpoint" in said
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()

    assert main(["info", str(out)]) == 0
    said = capsys.readouterr().out
    assert "model.layers.0.self_attn.q_proj" in said and "w4a16 g64 sym [pack-quantized]" in said
    q_proj_line = next(line for line in said.splitlines() if line.startswith("model.layers.0.self_attn.q_proj"))
    assert q_proj_line.split()[1:3] == ["4", "64"]
    assert "14 quantized, 1 floating point" in said  # the tied embedding stays fp16

    # the streamed reply is the greedy continuation of the chat-templated prompt
    # on qrt's engine (llama is supported), equal to transformers' generate on the same weights
    assert main(["generate", str(out), "w5 w6 w7", "--max-new-tokens", "6"]) == 0
    said = capsys.readouterr()
    streamed = said.out.strip()
    assert "qrt engine" in said.err
    tok = AutoTokenizer.from_pretrained(out)
    model = load_quantized(out, device="cpu", progress=False)
    ids = tok.apply_chat_template([{"role": "user", "content": "w5 w6 w7"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    assert streamed == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_generate_falls_back_to_hf_for_an_unsupported_architecture(make_model, tmp_path, capsys):
    d = tmp_path / "gemma"
    make_model("gemma", d)
    save_tiny_tokenizer(d)
    assert main(["generate", str(d), "w5 w6 w7", "--max-new-tokens", "5", "--no-chat-template"]) == 0
    said = capsys.readouterr()
    assert "not supported" in said.err.lower() and "transformers generate" in said.err
    assert "llama" in said.err  # the note names the architectures the engine implements
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    ids = tok("w5 w6 w7", return_tensors="pt").input_ids
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert said.out.strip() == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_quantize_options(tiny_dir, tmp_path, capsys):
    out = tmp_path / "q8"
    assert main(["quantize", str(tiny_dir), "--scheme", "w4a16", "--group-size", "32", "--quantize-embedding",
                 "--ignore", "lm_head", "re:.*down_proj", "--out", str(out)]) == 0
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    groups = list(qcfg["config_groups"].values())
    assert {g["weights"]["group_size"] for g in groups} == {32, None}  # w4 g32 + the int8 embedding
    assert "model.layers.0.mlp.down_proj" in qcfg["ignore"]
    with pytest.raises(SystemExit, match="--group-size: scheme 'w8a16' is per-channel"):
        main(["quantize", str(tiny_dir), "--scheme", "w8a16", "--group-size", "64", "--out", str(out)])
