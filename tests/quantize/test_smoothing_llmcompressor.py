"""Our SmoothQuant and AWQ against llmcompressor's SmoothQuantModifier and AWQModifier at the
same settings, on the same tiny model and calibration windows. llmcompressor runs in its own
environment (bench/llmc_smooth.py in a subprocess): QRT_LLMCOMPRESSOR_PYTHON names its python
(else test_gptq_llmcompressor's lookup: QRT_LLMC_PYTHON, .venv-llmc)."""
import json
import os
from pathlib import Path

import pytest
import torch
from test_gptq_llmcompressor import llmc_python, run
from test_smoothing import smooth_only
from transformers import AutoModelForCausalLM, AutoTokenizer

from qrt.hub.load import load_quantized
from qrt.data.windows import calibration_windows
from qrt.quantize.awq import AWQ, AWQConfig
from qrt.quantize.gptq_model import gptq_quantize_model
from qrt.quantize.smoothquant import SmoothQuant, SmoothQuantConfig
from qrt.runtime.linear import QuantLinear
from qrt.schemes import resolve_scheme

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TEXTS = ["Smoothing moves outliers into the weights. " * 12, "Activation-aware scales protect channels. " * 12]


def peer_python() -> str:
    env = os.environ.get("QRT_LLMCOMPRESSOR_PYTHON")
    return env if env and Path(env).exists() else llmc_python()


def run_peer(model_dir, windows, spec: dict, tmp_path, out: Path) -> None:
    torch.save(windows, tmp_path / "w.pt")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run([peer_python(), str(ROOT / "bench" / "llmc_smooth.py"), "--model", str(model_dir), "--windows",
         str(tmp_path / "w.pt"), "--spec", str(tmp_path / "spec.json"), "--out", str(out)])


def load(model_dir):
    return (AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
            AutoTokenizer.from_pretrained(model_dir))


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_smoothquant_matches_llmcompressor(tiny_lm_dir, tmp_path, alpha):
    model, tok = load(tiny_lm_dir)
    windows = calibration_windows(tok, TEXTS, 8, 48)
    smooth_only(model, SmoothQuant(model, SmoothQuantConfig(alpha=alpha)), windows)
    run_peer(tiny_lm_dir, windows, {"method": "smoothquant", "alpha": alpha}, tmp_path, tmp_path / "out.pt")
    theirs = torch.load(tmp_path / "out.pt")
    changed = 0
    for name, p in model.named_parameters():
        # both smooth the fp model block by block (no quantization in between), so both see
        # the same activations; min/max are exact and the factors are the same float32
        # formula: only the order of float32 ops differs (a few ulp)
        torch.testing.assert_close(p, theirs[name], rtol=1e-5, atol=1e-6, msg=name)
        changed += "norm" in name and not torch.allclose(p, torch.ones_like(p))
    assert changed == 4  # both norms of both blocks were smoothed (the fixture's norms are 1)


def test_awq_matches_llmcompressor(tiny_lm_dir, tmp_path):
    model, tok = load(tiny_lm_dir)
    windows = calibration_windows(tok, TEXTS, 8, 48)
    scheme = resolve_scheme("w4a16-g32").replace(scale_dtype="float32")  # llmcompressor keeps fp32 scales
    gptq_quantize_model(model, tok, scheme, calib=TEXTS, nsamples=8, seqlen=48, progress=False,
                        transform=AWQ(model, AWQConfig(n_grid=20)), rounding="rtn")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    spec = dict(method="awq", n_grid=20, duo_scaling=True, bits=4, symmetric=True, groups={"32": sorted(layers)},
                ignore=["lm_head"])
    run_peer(tiny_lm_dir, windows, spec, tmp_path, tmp_path / "ckpt")
    theirs = load_quantized(tmp_path / "ckpt", device="cpu", dtype=torch.float32, progress=False)
    # Block 0 sees the same fp inputs in both: the same grid point must win for every mapping,
    # so the folded norms agree to float32 rounding and the integers to a rare flip (a value
    # on a rounding boundary of W*s, which the two compute in a different op order).
    for name, layer in layers.items():
        if ".layers.0." not in name:
            continue
        a, b = layer.qweight(), theirs.get_submodule(name).qweight()
        torch.testing.assert_close(a.scale, b.scale, rtol=1e-5, atol=0, msg=name)
        flips = (a.q != b.q).float().mean().item()
        assert flips <= 1e-2 and (a.q.int() - b.q.int()).abs().max() <= 1, f"{name}: {flips:.2%} integers differ"
    for name in ("model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"):
        torch.testing.assert_close(model.get_parameter(name), theirs.get_parameter(name), rtol=1e-5, atol=0)
    # Later blocks: llmcompressor calibrates them on the fp outputs of the blocks before,
    # qrt on the quantized outputs (the error propagation of its GPTQ driver), so a different
    # grid point may win where the loss is flat. Judge the outcome instead: the logit error
    # against the fp model must be no worse than llmcompressor's (+10%: a flat-loss choice).
    fp, _ = load(tiny_lm_dir)
    ids = calibration_windows(tok, ["Held-out text, not the calibration strings. " * 10], 4, 48, seed=1)
    ref = fp(ids).logits
    ours_err = (model(ids).logits - ref).pow(2).mean().item()
    theirs_err = (theirs(ids).logits - ref).pow(2).mean().item()
    assert ours_err <= 1.1 * theirs_err, f"logit MSE: qrt {ours_err:.3e}, llmcompressor {theirs_err:.3e}"
