"""CPU timing of the int8-activation QuantLinear (W8A8, W4A8) against fp32 F.linear,
measured side by side in one run. Writes bench/results/a8_cpu.json.

    PYTHONPATH=$PWD/.dev python bench/bench_a8_cpu.py [--k 4096 --n 4096 --m 1 256 --threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from machine import cpu_model
from qrt.runtime.linear import QuantLinear
from qrt_kernels.reference import quant_rows_ref


def time_interleaved(fns: dict, reps: int) -> dict:
    """{name: (median ms, min ms)}, the candidates timed in turn within each repetition so
    that load from other processes on a shared machine hits them alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (on a shared, loaded machine 1 avoids "
                         "multi-ms thread-pool waits on every small op)")
    ap.add_argument("--out", default="bench/results/a8_cpu.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lin = torch.nn.Linear(args.k, args.n)
    layers = {s: QuantLinear.from_linear(lin, s) for s in ("w8a8", "w4a8")}
    rows = []
    with torch.no_grad():
        for m in args.m:
            x = torch.randn(m, args.k)
            for layer in layers.values():
                layer(x)  # finalize (one-time repack) outside the timing
            fns = {"fp32_linear": lambda: F.linear(x, lin.weight, lin.bias),
                   "quant_per_token": lambda: quant_rows_ref(x),
                   **{name: (lambda layer=layer: layer(x)) for name, layer in layers.items()}}
            row = {"m": m, "k": args.k, "n": args.n}
            for name, (med, best) in time_interleaved(fns, args.reps).items():
                row[f"{name}_ms_median"], row[f"{name}_ms_min"] = med, best
            for name in layers:
                row[f"{name}_speedup_vs_fp32_median"] = row["fp32_linear_ms_median"] / row[f"{name}_ms_median"]
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
