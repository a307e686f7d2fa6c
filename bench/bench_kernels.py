#!/usr/bin/env python3
"""Kernel sweep: y = x [M, K] @ W.T for W [N, K] (N = out_features, K = in_features).

For each shape and M: median time per call, achieved GB/s (weights + x + y, each moved
once), TFLOP/s (2*M*N*K), % of the device copy bandwidth measured in the same run, and
speedups over torch's fp16/bf16 (CUDA) or fp32 (CPU) matmul and torch's int4/int8
weight-only kernels, all timed side by side (bench/timing.py says how).

    python bench/bench_kernels.py                    # full sweep on the default device
    python bench/bench_kernels.py --quick            # tiny smoke run (CI)
    python bench/bench_kernels.py --shapes 4096x4096 --m 1,16 --schemes w4a16,w8a16

Writes <out>/kernels_<device>.json and .png (default bench/results/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, also via -m or runpy

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench_common import setup_threads, write_report  # noqa: E402
from kernel_candidates import build_candidates  # noqa: E402
from kernel_report import add_speedups, evaluate_targets, plot_speedups, print_table  # noqa: E402
from machine import device_tag, machine_info  # noqa: E402
import timing  # noqa: E402
from timing import copy_bandwidth_GBps, do_bench_ms, interleaved_medians, make_timer  # noqa: E402

# N x K (out x in). Target shapes first, so a time budget cuts the Llama shapes, not them.
SHAPES = {
    "8192x8192": "square 8192 (Llama-3-70B q_proj/o_proj)",
    "8192x28672": "N=8192, K=28672 (Llama-3-70B down_proj)",
    "4096x4096": "Llama-3-8B q_proj / o_proj",
    "4096x14336": "Llama-3-8B down_proj (N=4096, K=14336)",
    "14336x4096": "Llama-3-8B gate_proj / up_proj (N=14336, K=4096)",
    "6144x4096": "Llama-3-8B fused q,k,v (N=4096+2*1024, K=4096)",
}
M_VALUES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
CPU_SHAPES = ["4096x4096", "4096x14336", "14336x4096", "6144x4096"]
CPU_M = [1, 2, 4, 8, 16, 32, 64, 128]
QUICK_SHAPES, QUICK_M = ["256x256", "384x512"], [1, 16]
CHECK_ROWS = 64  # rows of y checked against the float32 reference (all tiles still run)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", help="comma list of NxK (N=out, K=in); default: all (CUDA) or the 8B ones (CPU)")
    p.add_argument("--m", help="comma list of M (rows of x)")
    p.add_argument("--schemes", default=None, help="qrt schemes, default w4a16,w8a16 (+w8a8,w4a8 on CUDA)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"],
                   help="activation/weight dtype of the layers (default fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--rounds", type=int, default=None, help="timed passes per candidate (median taken)")
    p.add_argument("--budget-s", type=float, default=None, help="start no new (shape, M) after this many seconds")
    p.add_argument("--no-do-bench", action="store_true", help="skip the triton do_bench cross-check (CUDA)")
    p.add_argument("--no-rotate", action="store_true",
                   help="one weight copy per candidate: cache-resident weights (a single-layer microbenchmark)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, M in {1,16}, few rounds (CI smoke run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="output folder")
    return p.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_shape(text: str) -> tuple[int, int]:
    try:
        n, k = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape must be NxK like 4096x14336, found {text!r}") from None
    return n, k


def resolve_config(args) -> dict:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if cuda else "fp32")]
    shapes = args.shapes.split(",") if args.shapes else (
        QUICK_SHAPES if args.quick else (list(SHAPES) if cuda else CPU_SHAPES))
    ms = _ints(args.m) if args.m else (QUICK_M if args.quick else (M_VALUES if cuda else CPU_M))
    schemes = args.schemes.split(",") if args.schemes else (
        ["w4a16", "w8a16", "w8a8", "w4a8"] if cuda else ["w4a16", "w8a16"])
    rounds = args.rounds or (3 if args.quick else (20 if cuda else 7))
    return dict(device=device, dtype=dtype, shapes=[parse_shape(s) for s in shapes], ms=ms,
                schemes=schemes, rounds=rounds, budget_s=args.budget_s, quick=args.quick,
                do_bench=cuda and not args.no_do_bench)


def _as_dense(y) -> torch.Tensor:
    """Kernel output as a float tensor; (int8 q [M, K], scale [M] or [M, 1]) -> q * scale."""
    if isinstance(y, (tuple, list)):
        q, scale = y[0], y[1]
        return q.float() * scale.float().reshape(q.shape[0], -1)
    return y.float()


def check(c, x: torch.Tensor) -> float:
    """Relative error of candidate output vs its float32 reference on the first rows."""
    y = _as_dense(c.calls[0](x))[:CHECK_ROWS]
    ref = c.reference(x[:CHECK_ROWS])
    if not torch.isfinite(y).all():
        return float("inf")
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def measure(cands, n: int, k: int, m: int, cfg: dict, errors: list) -> list[dict]:
    """Check, then time every candidate at one M (round-robin); one JSON row each."""
    device, timers, rows, inputs = cfg["device"], {}, {}, {}
    for c in cands:
        xs = [torch.randn(m, k, device=device, dtype=c.x_dtype) for _ in c.calls]  # never zeros
        try:
            rel = check(c, xs[0])
            timers[c.name] = make_timer(device, lambda c=c, xs=xs: [f(x) for f, x in zip(c.calls, xs)])
        except Exception as e:  # recorded, not fatal: one broken kernel must not hide the rest
            errors.append({"shape": [n, k], "M": m, "candidate": c.name, "error": f"{type(e).__name__}: {e}"[:400]})
            continue
        inputs[c.name] = xs
        rows[c.name] = {"N": n, "K": k, "M": m, "candidate": c.name, "kind": c.kind, "scheme": c.scheme,
                        "x_dtype": str(c.x_dtype).replace("torch.", ""), "copies": len(c.calls),
                        "rel_err": rel, "tol": c.tol, "ok": rel <= c.tol,
                        "timer": timers[c.name].method, **c.notes}
        if getattr(timers[c.name], "error", None):
            rows[c.name]["graph_error"] = timers[c.name].error
    medians = interleaved_medians(timers, cfg["rounds"], min_round_s=0.0 if cfg["quick"] else 0.05)
    for c in cands:
        if c.name not in rows:
            continue
        r = rows[c.name]
        ms = medians[c.name] / len(c.calls)
        nbytes = c.weight_bytes + m * k * c.x_dtype.itemsize + m * c.out_bytes_per_row
        r.update(ms=ms, bytes=nbytes, GBps=nbytes / ms / 1e6, TFLOPs=m * c.flops_per_row / ms / 1e9)
        if cfg["do_bench"]:
            r["ms_do_bench"] = do_bench_ms(lambda c=c: c.calls[0](inputs[c.name][0]))
    return list(rows.values())


def run(cfg: dict) -> dict:
    device, t0 = cfg["device"], time.perf_counter()
    info = machine_info(device)
    # copy bandwidth: measured before the sweep and after each shape; the best sample is the
    # machine's (on a shared CPU a single sample can land in someone else's burst)
    copy_bytes = (8 << 20) if cfg["quick"] else None
    copy_samples = [copy_bandwidth_GBps(device, nbytes=copy_bytes)]
    results, errors, skipped, interrupted = [], [], [], False
    over = lambda: cfg["budget_s"] is not None and time.perf_counter() - t0 > cfg["budget_s"]  # noqa: E731
    try:
        for n, k in tqdm(cfg["shapes"], desc="shapes", disable=cfg["quick"]):
            if over():
                skipped += [[n, k, m] for m in cfg["ms"]]
                continue
            torch.manual_seed(n * 1_000_003 + k)
            cands = build_candidates(n, k, cfg["schemes"], device, cfg["dtype"], errors)
            for m in tqdm(cfg["ms"], desc=f"{n}x{k}", leave=False, disable=cfg["quick"]):
                if over():
                    skipped.append([n, k, m])
                    continue
                results += measure(cands, n, k, m, cfg, errors)
            del cands
            if device.type == "cuda":
                torch.cuda.empty_cache()
            copy_samples.append(copy_bandwidth_GBps(device, nbytes=copy_bytes))
    except KeyboardInterrupt:  # a stage timeout (SIGINT): keep what was measured
        interrupted = True
    copy_gbps = max(copy_samples)
    for r in results:
        r["pct_copy_bw"] = 100 * r["GBps"] / copy_gbps
    add_speedups(results)
    return {"machine": info, "copy_bandwidth_GBps": copy_gbps, "copy_bandwidth_samples_GBps": copy_samples,
            "config": {"shapes_NxK": [list(s) for s in cfg["shapes"]], "M": cfg["ms"], "schemes": cfg["schemes"],
                       "dtype": str(cfg["dtype"]).replace("torch.", ""), "rounds": cfg["rounds"],
                       "quick": cfg["quick"], "max_weight_copies": timing.MAX_COPIES,
                       "rotate_cache_multiple": timing.ROTATE_CACHE_MULTIPLE, "shape_names": SHAPES},
            "results": results, "targets": evaluate_targets(results, device.type), "errors": errors,
            "skipped_NKM_budget": skipped, "interrupted": interrupted,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_threads(args.quick, args.threads)
    if args.quick or args.no_rotate:  # smoke shapes need no cache defeat; resident = one copy
        timing.MAX_COPIES = 1 if args.no_rotate else 2
    report = run(resolve_config(args))
    stem = Path(args.out) / f"kernels_{device_tag(report['machine'])}{'_resident' if args.no_rotate else ''}"
    write_report(stem.with_suffix(".json"), report)
    plot_path = plot_speedups(report, stem.with_suffix(".png"))
    print_table(report)
    print(f"wrote {stem.with_suffix('.json')}" + (f" and {plot_path}" if plot_path else ""))
    return report


if __name__ == "__main__":
    main()
