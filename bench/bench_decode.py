#!/usr/bin/env python3
"""End-to-end greedy decode of a Llama-3-8B-shaped model with random weights (built from
its config, no download): tokens/s per scheme and batch size, one CUDA graph per decode
step on GPU, plus a torch.compile(fullgraph=True) check per scheme.

Schemes: dense (bf16 on CUDA, fp32 on CPU), qrt's w8a16 / w4a16 (g128) / w8a8 / w4a8, and
torch_int4 (torch's int4 weight-only kernel, the path torchao's int4 weight-only uses).
lm_head stays dense in every scheme.

    python bench/bench_decode.py                               # CUDA: full 32 layers
    python bench/bench_decode.py --layers 2 --vocab 32000      # CPU-sized variant
    python bench/bench_decode.py --quick                       # tiny smoke run (CI)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench_common import setup_threads, verdict_line, write_report  # noqa: E402
from decode_loop import DecodeState, fullgraph_check, quantize_for, time_decode  # noqa: E402
from llama_model import build_model, llama3_8b_config  # noqa: E402
from machine import device_tag, machine_info  # noqa: E402

QUICK_DIMS = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=2, vocab_size=512)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # target comparisons first (W4A16 vs dense and vs the torch int4 peer), so a time budget cuts the rest
    p.add_argument("--schemes", default="dense,w4a16,torch_int4,w8a16,w8a8,w4a8")
    p.add_argument("--batch", default=None, help="comma list (default 1,8,32,128 on CUDA; 1,8 on CPU)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default 32 on CUDA, 2 on CPU)")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary (default 128256 on CUDA, 32000 on CPU)")
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed decode steps per batch size")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default=None, choices=list(DTYPES), help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--no-graph", action="store_true", help="time eager steps on CUDA too")
    p.add_argument("--compile-check", default="aot_eager",
                   help="torch.compile backend for the fullgraph check on a 1-layer model, or 'none'")
    p.add_argument("--budget-s", type=float, default=None, help="start no new scheme after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="tiny dims, 2 layers, few steps (CI smoke run)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    return p.parse_args(argv)


def resolve_config(a) -> dict:
    cuda = (a.device == "auto" and torch.cuda.is_available()) or a.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    dims = dict(QUICK_DIMS) if a.quick else {}
    dims["num_hidden_layers"] = a.layers or dims.get("num_hidden_layers") or (32 if cuda else 2)
    dims["vocab_size"] = a.vocab or dims.get("vocab_size") or (128256 if cuda else 32000)
    small = a.quick or not cuda
    return dict(device=device, dtype=DTYPES[a.dtype or ("bf16" if cuda else "fp32")],
                schemes=a.schemes.split(","), dims=dims,
                batches=[int(b) for b in (a.batch or ("1,2" if a.quick else "1,8,32,128" if cuda else "1,8")).split(",")],
                prompt_len=a.prompt_len or (4 if small else 16), steps=a.steps or (3 if a.quick else 8 if small else 64),
                warmup=a.warmup or (2 if small else 4), graph=cuda and not a.no_graph,
                compile_backend=None if a.compile_check == "none" else a.compile_check, budget_s=a.budget_s)


def bench_scheme(scheme: str, cfg: dict, model_cfg) -> list[dict]:
    """Build the model fresh (same seed), quantize, time every batch size."""
    device, dtype = cfg["device"], cfg["dtype"]
    t0 = time.perf_counter()
    model = build_model(model_cfg, device, dtype)
    t1 = time.perf_counter()
    qinfo = quantize_for(model, scheme)
    t2 = time.perf_counter()
    name = scheme if scheme != "dense" else str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace(
        "float32", "fp32").replace("float16", "fp16")
    rows = []
    for batch in cfg["batches"]:
        if cfg.get("deadline") and time.perf_counter() > cfg["deadline"]:
            rows.append({"scheme": name, "batch": batch, "error": "skipped: time budget"})
            continue
        max_len = cfg["prompt_len"] + cfg["warmup"] + cfg["steps"] + 8
        state = DecodeState(model, batch, cfg["prompt_len"], max_len, device)
        r = time_decode(state, cfg["steps"], cfg["warmup"], cfg["graph"])
        rows.append({"scheme": name, "batch": batch, **r, "build_s": round(t1 - t0, 2),
                     "quantize_s": round(t2 - t1, 2), "quantize": qinfo})
        del state
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def compile_check(scheme: str, cfg: dict) -> dict:
    """fullgraph check on a 1-layer model of the same widths (graph breaks do not depend
    on depth, and tracing 32 layers would take minutes of the GPU budget)."""
    try:
        small = build_model(llama3_8b_config(**{**cfg["dims"], "num_hidden_layers": 1}), cfg["device"], cfg["dtype"])
        quantize_for(small, scheme)
    except Exception as e:
        return {"fullgraph_ok": False, "backend": cfg["compile_backend"], "error": f"build: {type(e).__name__}: {e}"[:600]}
    return fullgraph_check(small, cfg["device"], cfg["compile_backend"])


def add_speedups(rows: list[dict]) -> None:
    dense = {r["batch"]: r for r in rows if r["quantize"]["path"] == "dense"}
    for r in rows:
        if r["batch"] in dense:
            r["speedup_vs_dense"] = r["tokens_per_s"] / dense[r["batch"]]["tokens_per_s"]


def run(cfg: dict) -> dict:
    device, t0 = cfg["device"], time.perf_counter()
    cfg = {**cfg, "deadline": None if cfg["budget_s"] is None else t0 + cfg["budget_s"]}
    model_cfg = llama3_8b_config(**cfg["dims"])
    rows, checks, skipped, interrupted = [], [], [], False
    try:
        for scheme in tqdm(cfg["schemes"], desc="schemes"):
            if cfg["budget_s"] is not None and time.perf_counter() - t0 > cfg["budget_s"]:
                skipped.append(scheme)
                continue
            try:
                rows += bench_scheme(scheme, cfg, model_cfg)
            except Exception as e:  # one broken scheme must not hide the others' numbers
                rows.append({"scheme": scheme, "error": f"{type(e).__name__}: {e}"[:600]})
            if cfg["compile_backend"]:
                checks.append({"scheme": scheme, **compile_check(scheme, cfg)})
    except KeyboardInterrupt:  # a stage timeout (SIGINT): keep what was measured
        interrupted = True
    ok_rows = [r for r in rows if "tokens_per_s" in r]
    add_speedups(ok_rows)
    w4 = [r["speedup_vs_dense"] for r in ok_rows if r["scheme"] == "w4a16" and r["batch"] == 1
          and "speedup_vs_dense" in r]
    return {"machine": machine_info(device),
            "config": {"model": model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(cfg["dims"]),
                       **{k: v for k, v in cfg.items() if k not in ("device", "dims", "deadline")},
                       "dtype": str(cfg["dtype"]).replace("torch.", "")},
            "results": rows, "compile_checks": checks, "skipped_schemes_budget": skipped,
            "interrupted": interrupted,
            "targets": [{"name": "W4A16 batch-1 decode tokens/s vs dense", "value": w4[0] if w4 else None,
                         "threshold": 2.5, "met": (w4[0] >= 2.5) if w4 else None}],
            "wall_s": round(time.perf_counter() - t0, 1)}


def print_table(report: dict) -> None:
    print(f"\n{report['machine']['device_name']}  layers={report['config']['model'].get('num_hidden_layers')}")
    print(f"{'scheme':<12} {'batch':>5} {'tok/s':>10} {'ms/step':>9} {'x dense':>8} {'mode':<11} agree")
    for r in report["results"]:
        if "tokens_per_s" not in r:
            print(f"{r['scheme']:<12} {r.get('batch', ''):>5} error: {r['error']}")
            continue
        print(f"{r['scheme']:<12} {r['batch']:>5} {r['tokens_per_s']:>10.1f} {r['ms_per_step']:>9.2f} "
              f"{r.get('speedup_vs_dense', float('nan')):>8.2f} {r['mode']:<11} {r['graph_agrees_with_eager']}")
    for c in report["compile_checks"]:
        print(f"compile fullgraph [{c['backend']}] {c['scheme']}: {'ok' if c['fullgraph_ok'] else c['error']}")
    for t in report["targets"]:
        print(f"target: {verdict_line(t)}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_threads(args.quick, args.threads)
    report = run(resolve_config(args))
    path = write_report(Path(args.out) / f"decode_{device_tag(report['machine'])}{'_quick' if args.quick else ''}.json",
                        report)
    print_table(report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
