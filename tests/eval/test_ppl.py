"""Perplexity the GPTQ-paper way, on a tiny random Llama, against float64 math."""
import hashlib
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qrt.cli import main
from qrt.data.text import EVAL_TEXT, gptq_eval_text, read_text, resolve_text_path, wikitext_rows
from qrt.eval.ppl import eval_window_len, perplexity, tokenize_eval_text

TEXT = " = Title = \n \n Some text , with @-@ tokens .\n \n" + " More words follow here .\n" * 60


def test_rows_follow_the_wikitext_dataset():
    # a line keeps its newline, a blank (whitespace-only) line becomes an empty row
    assert wikitext_rows(" = A = \n \n b c \n") == [" = A = \n", "", " b c \n"]
    assert gptq_eval_text(" = A = \n \n b\n") == " = A = \n" + "\n\n" + "" + "\n\n" + " b\n"


def test_default_eval_text_is_the_canonical_test_split():
    data = read_text(resolve_text_path(None, EVAL_TEXT)).encode("utf-8")
    # sha256 of WikiText-2 raw wiki.test.raw as distributed (qrt/data/README.md)
    assert hashlib.sha256(data).hexdigest() == "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"


def float64_ppl(model, ids: torch.Tensor, window: int, n: int) -> float:
    """exp(mean NLL) of tokens 2..L of the first n windows, log-softmax in float64."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(n):
            w = ids[i * window:(i + 1) * window]
            logp = torch.log_softmax(model(w[None]).logits[0].double(), dim=-1)
            total -= logp[torch.arange(window - 1), w[1:]].sum().item()
            count += window - 1
    return math.exp(total / count)


def test_ppl_is_finite_deterministic_and_matches_float64(tiny_lm_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    f = tmp_path / "text.txt"
    f.write_text(TEXT)
    ids = tokenize_eval_text(tok, f)
    assert torch.equal(ids, tok(gptq_eval_text(TEXT), return_tensors="pt").input_ids[0])  # tokenized once
    L = eval_window_len(model)
    assert L == 128  # min(2048, the model's 128-token context)
    a = perplexity(model, ids, progress=False)
    b = perplexity(model, ids, progress=False)
    n = ids.numel() // L
    assert a.windows == n and a.tokens == n * (L - 1) and math.isfinite(a.ppl)
    assert a.ppl == b.ppl and a.window_nlls == b.window_nlls  # deterministic
    # float32 cross-entropy vs float64 log-softmax: ~1e-6 relative per token
    assert a.ppl == pytest.approx(float64_ppl(model, ids, L, n), rel=1e-5)
    first = perplexity(model, ids, max_windows=2, progress=False)
    assert first.windows == 2 and first.window_nlls == a.window_nlls[:2]
    assert first.ppl == pytest.approx(float64_ppl(model, ids, L, 2), rel=1e-5)


def test_bad_windows_raise(tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    ids = torch.randint(0, 256, (100,))
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, ids, progress=False)
    with pytest.raises(ValueError, match="exceeds the model context"):
        perplexity(model, ids, window=256, progress=False)
    with pytest.raises(ValueError, match="max_windows"):
        perplexity(model, ids, window=16, max_windows=0, progress=False)


def test_cli_eval_ppl(tiny_lm_dir, tmp_path, capsys):
    f = tmp_path / "text.txt"
    f.write_text(TEXT)
    out_json = tmp_path / "ppl.json"
    assert main(["eval", "ppl", str(tiny_lm_dir), "--text", str(f), "--max-windows", "2",
                 "--device", "cpu", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    ids = tokenize_eval_text(AutoTokenizer.from_pretrained(tiny_lm_dir), f)
    expected = perplexity(model, ids, max_windows=2, progress=False).ppl
    assert f"perplexity: {expected:.4f}" in printed and "2 windows x 128 tokens" in printed
    assert '"ppl"' in out_json.read_text()
    with pytest.raises(FileNotFoundError, match="expected a readable file"):
        main(["eval", "ppl", str(tiny_lm_dir), "--text", str(tmp_path / "missing.txt"), "--device", "cpu"])
