"""Quality table: SmolLM2-135M perplexity on WikiText-2 (raw test, GPTQ-paper windows of
2048 tokens) for fp32, RTN and GPTQ schemes, and llmcompressor's GPTQ side by side.

  python bench/quality_table.py --windows 8 --threads 1   # every config
  python bench/quality_table.py --only fp32,w4a16-gptq-act --windows 0  # full text

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
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from quality_configs import CONFIGS, CONFIGS_METHOD, TRANSFORM_KEYS

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "results" / "quality_runs"
OUT = ROOT / "results" / "quality_smollm2.json"


def hardware() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def load_fp32(name: str = "smollm2"):
    from qrt.hub.load import load_fp_model
    from qrt.hub.resolve import resolve_model_dir
    d = resolve_model_dir(name)
    model, tok = load_fp_model(d, dtype=torch.float32)
    return model, tok, d


def llmc_quantize(model, tokenizer, model_dir, scheme_name, actorder, args) -> float:
    """llmcompressor's GPTQ in a subprocess with the same windows and per-layer group sizes
    as ours; loads its dequantized weights into `model`. Returns its wall seconds."""
    from qrt.data.windows import calibration_windows
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
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # same threads as ours
        subprocess.run([args.llmc_python, str(ROOT / "llmc_gptq.py"), "--model", str(model_dir),
                        "--windows", f"{tmp}/w.pt", "--spec", f"{tmp}/spec.json", "--out", f"{tmp}/out.pt"],
                       check=True, env=env)
        out = torch.load(f"{tmp}/out.pt")
    with torch.no_grad():
        for name, w in out["weights"].items():
            model.get_submodule(name).weight.copy_(w)
    return out["seconds"]


def llmc_smooth(model, tok, model_dir, method: str, scheme_name, actorder, extra: dict, args):
    """llmcompressor's AWQModifier / SmoothQuantModifier + its round to nearest or GPTQ
    (bench/llmc_smooth.py) on our windows and per-layer group sizes; -> (its checkpoint
    loaded by qrt, wall seconds)."""
    from qrt import load_quantized
    from qrt.data.windows import calibration_windows
    from qrt.quantize.plan import plan_layers
    from qrt.schemes import resolve_scheme
    scheme = resolve_scheme(scheme_name)
    plan, _, ignore, _ = plan_layers(model, scheme, ("Linear",), ("lm_head",), ragged_groups=False)
    groups: dict[str, list[str]] = {}
    for name, (_, s) in plan.items():
        groups.setdefault(str(s.group_size) if s.strategy == "group" else "channel", []).append(name)
    spec = dict(method=CONFIGS_METHOD[method], bits=scheme.bits, symmetric=scheme.symmetric, groups=groups, ignore=list(ignore),
                input_activations=scheme.activations is not None, rounding=extra.pop("rounding", "rtn"),
                actorder=actorder, block_size=128, percdamp=0.01, n_grid=20, duo_scaling=True,
                alpha=extra.pop("alpha", 0.5))
    nsamples = extra.pop("nsamples", args.nsamples)
    tmp = Path(tempfile.mkdtemp(prefix="qrt-llmc-"))
    torch.save(calibration_windows(tok, None, nsamples, args.seqlen, seed=0), tmp / "w.pt")
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    subprocess.run([args.llmc_python, str(ROOT / "llmc_smooth.py"), "--model", str(model_dir), "--windows",
                    str(tmp / "w.pt"), "--spec", str(tmp / "spec.json"), "--out", str(tmp / "ckpt")],
                   check=True, env=env)
    seconds = json.loads((tmp / "ckpt.time.json").read_text())["seconds"]
    return load_quantized(tmp / "ckpt", device="cpu", dtype=torch.float32, progress=False), seconds




def quantize(name: str, model, tok, model_dir, args) -> dict:
    """Quantize `model` in place per CONFIGS[name]; -> timing fields."""
    from qrt.quantize.gptq_model import gptq_quantize_model
    from qrt.quantize.rtn import quantize_model
    from qrt.schemes import resolve_scheme
    method, scheme, actorder, *extra = CONFIGS[name]
    extra = dict(extra[0]) if extra else {}
    if "scale_dtype" in extra:
        scheme = resolve_scheme(scheme).replace(scale_dtype=extra.pop("scale_dtype"))
    t0, cpu0 = time.time(), time.process_time()
    if method == "rtn":
        quantize_model(model, scheme, progress=False, **extra)
    elif method == "gptq":
        gptq_quantize_model(model, tok, scheme, nsamples=args.nsamples, seqlen=args.seqlen, actorder=actorder,
                            **extra)
    elif method in TRANSFORM_KEYS:
        transform = make_transform(method, model, extra)
        gptq_quantize_model(model, tok, scheme, nsamples=extra.pop("nsamples", args.nsamples), seqlen=args.seqlen,
                            actorder=actorder, transform=transform, clip=extra.pop("gptq_clip", False), **extra)
        if getattr(transform, "chosen", None):  # SmoothQuant search: the alpha of each mapping
            return {"quantize_seconds": time.time() - t0, "quantize_cpu_seconds": time.process_time() - cpu0,
                    "sq_alphas": transform.chosen}
    elif method == "llmc":
        return {"quantize_seconds": llmc_quantize(model, tok, model_dir, scheme, actorder, args),
                "quantize_cpu_seconds": None}
    return {"quantize_seconds": time.time() - t0 if method != "fp" else 0.0,
            "quantize_cpu_seconds": time.process_time() - cpu0 if method != "fp" else None}


def make_transform(method: str, model, extra: dict):
    """The SmoothQuant / AWQ transform of a config; its settings are popped from extra."""
    from qrt.quantize.awq import AWQ, AWQConfig
    from qrt.quantize.smoothquant import SmoothQuant, SmoothQuantConfig
    cfg = {k: extra.pop(k) for k in TRANSFORM_KEYS[method] if k in extra}
    return SmoothQuant(model, SmoothQuantConfig(**cfg)) if method == "sq" else AWQ(model, AWQConfig(**cfg))


def cached_quantize(name: str, model, tok, model_dir, args):
    """quantize(), or its result from --cache-dir: GPTQ models as fp32 qrt checkpoints,
    llmcompressor's as its dequantized weights. -> (model, timing fields)."""
    from qrt import load_quantized, save_quantized
    method = CONFIGS[name][0]
    calibrated = ("gptq", *TRANSFORM_KEYS, *CONFIGS_METHOD)
    cache = Path(args.cache_dir) / name if args.cache_dir and method in (*calibrated, "llmc") else None
    if cache is not None and (cache / "timing.json").exists():
        timing = json.loads((cache / "timing.json").read_text())
        if method in calibrated:
            return load_quantized(cache / "ckpt", device="cpu", dtype=torch.float32, progress=False), timing
        with torch.no_grad():
            for n, w in torch.load(cache / "weights.pt").items():
                model.get_submodule(n).weight.copy_(w)
        return model, timing
    if method in CONFIGS_METHOD:  # llmcompressor's smoothing: its checkpoint, loaded by qrt
        _, scheme, actorder, *extra = CONFIGS[name]
        model, secs = llmc_smooth(model, tok, model_dir, method, scheme, actorder, dict(extra[0]) if extra else {},
                                  args)
        timing = {"quantize_seconds": secs, "quantize_cpu_seconds": None}
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            save_quantized(model, cache / "ckpt", tokenizer=tok, dtype=torch.float32, ragged_groups=True)
            (cache / "timing.json").write_text(json.dumps(timing))
        return model, timing
    timing = quantize(name, model, tok, model_dir, args)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        if method in calibrated:
            save_quantized(model, cache / "ckpt", tokenizer=tok, dtype=torch.float32, ragged_groups=True)
        else:
            torch.save({n: m.weight for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and n != "lm_head"}, cache / "weights.pt")
        (cache / "timing.json").write_text(json.dumps(timing))
    return model, timing


def pystdlib_text() -> tuple[str, list[str]]:
    """Out-of-domain text (code, not Wikipedia): this Python's top-level standard-library
    modules (no leading underscore), shuffled with seed 0, joined by blank lines."""
    import random
    import sysconfig
    files = sorted(p for p in Path(sysconfig.get_paths()["stdlib"]).glob("*.py") if not p.name.startswith("_"))
    random.Random(0).shuffle(files)
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files), [p.name for p in files]


def eval_ids(tok, text: str) -> torch.Tensor:
    """Token ids of the evaluation text: WikiText-2 test (GPTQ protocol) or pystdlib."""
    from qrt.eval.ppl import tokenize_eval_text
    if text == "wikitext":
        return tokenize_eval_text(tok)
    return tok(pystdlib_text()[0], return_tensors="pt").input_ids.reshape(-1)


def run_config(name: str, args) -> dict:
    from qrt.eval.ppl import perplexity
    method, scheme, actorder, *extra = CONFIGS[name]
    model, tok, model_dir = load_fp32(args.model)
    model, timing = cached_quantize(name, model, tok, model_dir, args)
    t0 = time.time()
    res = perplexity(model, eval_ids(tok, args.text), max_windows=args.windows or None).to_dict()
    res.update(config=name, method=method, scheme=scheme, actorder=actorder, eval_seconds=time.time() - t0,
               threads=torch.get_num_threads(), **timing)
    res.update(text=args.text)
    if method in ("gptq", "llmc", *TRANSFORM_KEYS, *CONFIGS_METHOD):
        res.update(seqlen=args.seqlen, **{"nsamples": args.nsamples, **(extra[0] if extra else {})})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=8, help="first N windows of the test text (0: all)")
    ap.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configs")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--llmc-python", default=os.environ.get("QRT_LLMCOMPRESSOR_PYTHON",
                                                            str(ROOT.parent / ".venv-llmc" / "bin" / "python")),
                    help="a python with llmcompressor (default: $QRT_LLMCOMPRESSOR_PYTHON, else the "
                         ".venv-llmc that scripts/setup.sh --llmcompressor creates)")
    ap.add_argument("--model", default="smollm2", help="fp model: smollm2 (default) or a directory")
    ap.add_argument("--results", default=str(RUNS), help="per-config result directory")
    ap.add_argument("--cache-dir", default=None,
                    help="keep quantized models here and reuse them (e.g. to re-evaluate on more windows)")
    ap.add_argument("--text", choices=["wikitext", "pystdlib"], default="wikitext",
                    help="evaluation text: WikiText-2 test (default) or Python standard-library source "
                         "(out of domain; result files get a __pystdlib suffix)")
    ap.add_argument("--markdown", action="store_true",
                    help="only print the docs/quality.md table from the runs already in --results")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (on a shared, oversubscribed CPU 1 avoids OpenMP thrash)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = Path(args.results)
    if args.markdown:
        print(markdown_table(runs, args.windows))
        return
    runs.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        if name not in CONFIGS:
            sys.exit(f"unknown config {name!r}; expected one of {list(CONFIGS)}")
        path = runs / f"{name}{'' if args.text == 'wikitext' else '__' + args.text}__w{args.windows}.json"
        if path.exists():
            continue
        res = run_config(name, args)
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(f"{name}: ppl {res['ppl']:.4f} ({res['windows']} windows, quantize {res['quantize_seconds']:.0f} s, "
              f"eval {res['eval_seconds']:.0f} s)", flush=True)
    if runs == RUNS:
        write_table()


LABELS = {"fp": "fp32", "rtn": "RTN", "gptq": "GPTQ (qrt)", "llmc": "GPTQ (llmcompressor 0.14)",
          "sq": "SmoothQuant + ", "awq": "AWQ + ", "llmc-sq": "llmcompressor 0.14 SmoothQuant + ",
          "llmc-awq": "llmcompressor 0.14 AWQ + "}


def markdown_table(runs: Path, windows: int) -> str:
    """The docs/quality.md table: one row per config run on `windows` windows, in CONFIGS order;
    "gap closed" compares a GPTQ row with RTN of the same scheme: 1 - (gptq - fp) / (rtn - fp)."""
    got = {n: json.loads((runs / f"{n}__w{windows}.json").read_text()) for n in CONFIGS
           if (runs / f"{n}__w{windows}.json").exists()}
    fp = got["fp32"]["ppl"]
    rtn = {(r["scheme"], r.get("ragged_groups", False)): r["ppl"] for r in got.values() if r["method"] == "rtn"}
    lines = ["| config | scheme | method | actorder | perplexity | vs fp32 | RTN gap closed | quantize time (threads) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for name, r in got.items():
        base = rtn.get((r["scheme"], r.get("ragged_groups", False)))
        closed = (f"{1 - (r['ppl'] - fp) / (base - fp):.0%}" if r["method"] not in ("fp", "rtn") and base else "")
        extra = (", fp32 scales" if r.get("scale_dtype") == "float32" else "") + \
            (", static groups" if r.get("static_groups") else "")
        secs = r.get("quantize_seconds") or 0
        when = "-" if r["method"] == "fp" else (f"{secs / 60:.1f} min" if secs >= 60 else f"{secs:.0f} s")
        when += f" ({r['threads']})" if r["method"] != "fp" and r.get("threads") else ""
        label = LABELS[r["method"]] + (r.get("rounding", "rtn").upper()
                                       if r["method"] in (*TRANSFORM_KEYS, *CONFIGS_METHOD) else "")
        lines.append(f"| `{name}` | {r['scheme'] or '-'} | {label}{extra} | {r.get('actorder') or '-'} | "
                     f"{r['ppl']:.3f} | {100 * (r['ppl'] / fp - 1):+.2f}% | {closed} | {when} |")
    return "\n".join(lines)


def write_table() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    for r in rows:
        r.pop("window_nlls", None)
    OUT.write_text(json.dumps({"model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32)",
                               "text": "WikiText-2 raw test, GPTQ-paper windows", "hardware": hardware(),
                               "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
