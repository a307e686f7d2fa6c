"""Quality table: SmolLM2-135M perplexity on WikiText-2 (raw test, GPTQ-paper windows of
2048 tokens) for fp32, RTN and GPTQ schemes, and llmcompressor's GPTQ side by side.

  PYTHONPATH=.dev python bench/quality_table.py --windows 8 --threads 1   # every config
  PYTHONPATH=.dev python bench/quality_table.py --only fp32,w4a16-gptq-act --windows 0  # full text

Each config's result is cached in bench/results/quality_runs/<config>__w<N>.json (N = 0:
all windows) with per-window NLLs, so an interrupted run resumes and any first-n subset
can be re-derived; the table is written to bench/results/quality_smollm2.json.
Calibration (GPTQ, ours and llmcompressor's): the same 128 x 512-token windows of the
WikiText-2 validation split, seed 0. llmcompressor runs in its own environment
(--llmc-python), see bench/llmc_gptq.py.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "results" / "quality_runs"
OUT = ROOT / "results" / "quality_smollm2.json"

# name: (method, scheme, actorder); method fp | rtn | gptq | llmc
CONFIGS = {
    "fp32": ("fp", None, None),
    "w8a16-rtn": ("rtn", "w8a16", None),
    "w8a8-rtn": ("rtn", "w8a8", None),
    "w4a8-rtn": ("rtn", "w4a8", None),
    "w4a16-g128-rtn": ("rtn", "w4a16", None),
    "w4a16-g128-gptq": ("gptq", "w4a16", None),
    "w4a16-g128-gptq-act": ("gptq", "w4a16", "weight"),
    "w4a16-g128-llmc-act": ("llmc", "w4a16", "weight"),
    "w4a16-g64-rtn": ("rtn", "w4a16-g64", None),
    "w4a16-g64-gptq": ("gptq", "w4a16-g64", None),
    "w4a16-g64-gptq-act": ("gptq", "w4a16-g64", "weight"),
    "w3a16-g64-rtn": ("rtn", "w3a16", None),
    "w3a16-g64-gptq-act": ("gptq", "w3a16", "weight"),
    "w2a16-g64-gptq-act": ("gptq", "w2a16", "weight"),
}


def hardware() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def load_fp32():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qrt.embedded import smollm2_dir
    d = smollm2_dir()
    return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32), AutoTokenizer.from_pretrained(d), d


def llmc_quantize(model, tokenizer, model_dir, scheme_name, actorder, args) -> float:
    """llmcompressor's GPTQ in a subprocess with the same windows and per-layer group sizes
    as ours; loads its dequantized weights into `model`. Returns its wall seconds."""
    from qrt.quantize.calib_data import calibration_windows
    from qrt.quantize.plan import plan_layers
    from qrt.schemes import resolve_scheme
    scheme = resolve_scheme(scheme_name)
    plan, _, ignore, _ = plan_layers(model, scheme, ("Linear",), ("lm_head",), ragged_groups=False)
    groups: dict[str, list[str]] = {}
    for name, (_, s) in plan.items():
        groups.setdefault(str(s.group_size) if s.strategy == "group" else "channel", []).append(name)
    spec = dict(bits=scheme.bits, symmetric=scheme.symmetric, actorder=actorder, block_size=128,
                percdamp=0.01, groups=groups, ignore=list(ignore))
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(calibration_windows(tokenizer, None, args.nsamples, args.seqlen, seed=0), f"{tmp}/w.pt")
        Path(f"{tmp}/spec.json").write_text(json.dumps(spec))
        subprocess.run([args.llmc_python, str(ROOT / "llmc_gptq.py"), "--model", str(model_dir),
                        "--windows", f"{tmp}/w.pt", "--spec", f"{tmp}/spec.json", "--out", f"{tmp}/out.pt"],
                       check=True)
        out = torch.load(f"{tmp}/out.pt")
    with torch.no_grad():
        for name, w in out["weights"].items():
            model.get_submodule(name).weight.copy_(w)
    return out["seconds"]


def run_config(name: str, args) -> dict:
    from qrt.convert import quantize_model
    from qrt.eval.ppl import perplexity, tokenize_eval_text
    from qrt.quantize.calibration import gptq_quantize_model
    method, scheme, actorder = CONFIGS[name]
    model, tok, model_dir = load_fp32()
    t0, cpu0 = time.time(), time.process_time()
    if method == "rtn":
        quantize_model(model, scheme, progress=False)
    elif method == "gptq":
        gptq_quantize_model(model, tok, scheme, nsamples=args.nsamples, seqlen=args.seqlen, actorder=actorder)
    elif method == "llmc":
        llmc_seconds = llmc_quantize(model, tok, model_dir, scheme, actorder, args)
    quant_seconds, quant_cpu = time.time() - t0, time.process_time() - cpu0
    t0 = time.time()
    res = perplexity(model, tokenize_eval_text(tok), max_windows=args.windows or None).to_dict()
    res.update(config=name, method=method, scheme=scheme, actorder=actorder, eval_seconds=time.time() - t0,
               threads=torch.get_num_threads(),
               quantize_seconds=quant_seconds if method != "fp" else 0.0,
               quantize_cpu_seconds=quant_cpu if method in ("rtn", "gptq") else None)
    if method == "llmc":
        res["quantize_seconds"] = llmc_seconds
    if method in ("gptq", "llmc"):
        res.update(nsamples=args.nsamples, seqlen=args.seqlen)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=8, help="first N windows of the test text (0: all)")
    ap.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configs")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--llmc-python", default="/work/venvs/llmc/bin/python")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (on a shared, oversubscribed CPU 1 avoids OpenMP thrash)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    RUNS.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        if name not in CONFIGS:
            sys.exit(f"unknown config {name!r}; expected one of {list(CONFIGS)}")
        path = RUNS / f"{name}__w{args.windows}.json"
        if path.exists():
            continue
        res = run_config(name, args)
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(f"{name}: ppl {res['ppl']:.4f} ({res['windows']} windows, quantize {res['quantize_seconds']:.0f} s, "
              f"eval {res['eval_seconds']:.0f} s)", flush=True)
    write_table()


def write_table() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    for r in rows:
        r.pop("window_nlls", None)
    OUT.write_text(json.dumps({"model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32)",
                               "text": "WikiText-2 raw test, GPTQ-paper windows", "hardware": hardware(),
                               "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
