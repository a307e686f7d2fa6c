"""qrt.hub.load_model, the one loader of `qrt generate / eval / serve` and qrt.LLM: every
kind of directory (unquantized, qrt/compressed-tensors, AutoGPTQ's own layout) and the
--device / --dtype defaults."""
import inspect
import math

import pytest
import torch
from peer_checkpoints import write_gptq_checkpoint
from tiny_models import save_tiny_tokenizer
from transformers import AutoTokenizer, GenerationConfig

import qrt
import qrt.serve.run
from qrt.cli import main
from qrt.hub.load import default_device, load_fp_model, load_model, load_quantized, model_dtype
from qrt.runtime.linear import QuantLinear


@pytest.fixture
def autogptq_dir(tmp_path):
    """AutoGPTQ's own save: quantize_config.json (none in config.json) and
    gptq_model-4bit-32g.safetensors (no model.safetensors), plus a tokenizer."""
    out = tmp_path / "autogptq"
    write_gptq_checkpoint(out, "llama", 3, bits=4, group_size=32, sym=True, desc_act=False, fmt="gptq",
                          autogptq_layout=True)
    save_tiny_tokenizer(out, vocab_size=128)
    assert not (out / "model.safetensors").exists()
    return out


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """n greedy tokens from transformers' generate, never stopping at EOS."""
    config = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    saved, model.generation_config.eos_token_id = model.generation_config.eos_token_id, None
    try:
        return model.generate(torch.tensor([ids]), generation_config=config)[0, len(ids):].tolist()
    finally:
        model.generation_config.eos_token_id = saved


def test_generate_accepts_an_autogptq_dir(autogptq_dir, capsys):
    # before load_model, `qrt generate` took this for an unquantized model: "no file named model.safetensors"
    assert main(["generate", str(autogptq_dir), "w5 w6 w7", "--max-new-tokens", "5", "--device", "cpu"]) == 0
    streamed = capsys.readouterr().out.strip()
    tok = AutoTokenizer.from_pretrained(autogptq_dir)
    model = load_quantized(autogptq_dir, device="cpu", dtype=torch.float32, progress=False)
    ids = tok.apply_chat_template([{"role": "user", "content": "w5 w6 w7"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    assert streamed == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_eval_accepts_an_autogptq_dir(autogptq_dir, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(f"w{(7 * i + j) % 120 + 3}" for j in range(9)) for i in range(12)) + "\n")
    assert main(["eval", "ppl", str(autogptq_dir), "--text", str(text), "--window", "16", "--max-windows", "2"]) == 0
    printed = capsys.readouterr().out
    assert "quantized checkpoint (gptq)" in printed
    ppl = float(printed.split("perplexity:")[1].split()[0])
    # independent: two windows of 16 tokens of the GPTQ-joined text, mean next-token NLL
    from qrt.eval.ppl import tokenize_eval_text
    tok = AutoTokenizer.from_pretrained(autogptq_dir)
    ids = tokenize_eval_text(tok, text)[:32].reshape(2, 16)
    model = load_quantized(autogptq_dir, device="cpu", dtype=torch.float32, progress=False)
    with torch.no_grad():
        logits = model(ids).logits.double()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert ppl == pytest.approx(math.exp(nll.item()), rel=1e-3)  # printed with 4 decimals


def test_serve_and_llm_accept_an_autogptq_dir(autogptq_dir, monkeypatch):
    served = {}
    monkeypatch.setattr(qrt.serve.run, "serve_app", lambda app, engine, *a, **k: served.update(engine=engine) or 0)
    assert main(["serve", str(autogptq_dir), "--device", "cpu", "--dtype", "float32", "--kv-cache-mb", "4"]) == 0
    model = served["engine"].model
    assert any(isinstance(m, QuantLinear) for m in model.modules()) and model.dtype == torch.float32
    llm = qrt.LLM(str(autogptq_dir), device="cpu", dtype="float32", max_num_seqs=1, kv_cache_mb=4, num_threads=1)
    try:
        out = llm.generate([[5, 6, 7]], qrt.SamplingParams(temperature=0, max_tokens=4, ignore_eos=True),
                           use_tqdm=False)
        assert out[0].outputs[0].token_ids == _greedy(llm.engine.model, [5, 6, 7], 4)
    finally:
        llm.shutdown()


def test_load_quantized_needs_a_checkpoint():
    # its old default, "smollm2", is the unquantized embedded model: it could only raise
    assert inspect.signature(load_quantized).parameters["repo_id_or_path"].default is inspect.Parameter.empty
    with pytest.raises(TypeError):
        load_quantized()
    with pytest.raises(ValueError, match="no quantization_config.*load_model"):
        load_quantized("smollm2", device="cpu", progress=False)


def test_fp_loader_refuses_an_autogptq_dir_clearly(autogptq_dir):
    with pytest.raises(ValueError, match="already quantized.*AutoGPTQ"):
        load_fp_model(autogptq_dir)


def test_defaults_cuda_bf16_with_a_gpu_else_cpu_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda") and model_dtype(None, default_device()) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu") and model_dtype(None, default_device()) == torch.float32
    assert model_dtype("auto", torch.device("cpu")) == "auto"
    assert model_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="dtype: expected .*'bfloat16'.*found 'half'"):
        model_dtype("half", torch.device("cpu"))


def test_dtype_and_quantize_on_load(make_model, tmp_path):
    make_model("llama", tmp_path / "fp")
    model, tok = load_model(tmp_path / "fp")
    assert tok is None and model.dtype == torch.float32 and next(model.parameters()).device.type == "cpu"
    model, _ = load_model(tmp_path / "fp", dtype="bfloat16", quantize="w4a16")
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert layers and model.dtype == torch.bfloat16 and all(m.dtype == torch.bfloat16 for m in layers)
    qrt.save_quantized(model, tmp_path / "q")
    with pytest.raises(ValueError, match="already quantized; expected quantize=None, found 'w4a16'"):
        load_model(tmp_path / "q", quantize="w4a16")
    model, _ = load_model(tmp_path / "q", dtype="float16")
    assert all(m.dtype == torch.float16 for m in model.modules() if isinstance(m, QuantLinear))
