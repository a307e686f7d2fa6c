"""CPU timing of the int8-activation QuantLinear (W8A8, W4A8) against fp32 F.linear,
measured side by side in one run. Writes bench/results/a8_cpu.json.

    PYTHONPATH=$PWD/.dev python bench/bench_a8_cpu.py [--k 4096 --n 4096 --m 1 256]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qrt.modules import QuantLinear
from qrt_kernels.reference import quant_rows_ref


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default="bench/results/a8_cpu.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    lin = torch.nn.Linear(args.k, args.n)
    layers = {s: QuantLinear.from_linear(lin, s) for s in ("w8a8", "w4a8")}
    rows = []
    with torch.no_grad():
        for m in args.m:
            x = torch.randn(m, args.k)
            row = {"m": m, "k": args.k, "n": args.n,
                   "fp32_linear_ms": median_ms(lambda: F.linear(x, lin.weight, lin.bias), args.reps),
                   "quant_per_token_ms": median_ms(lambda: quant_rows_ref(x), args.reps)}
            for name, layer in layers.items():
                layer(x)  # finalize outside the timing
                row[f"{name}_ms"] = median_ms(lambda: layer(x), args.reps)
            for name in layers:
                row[f"{name}_speedup_vs_fp32"] = row["fp32_linear_ms"] / row[f"{name}_ms"]
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    meta = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
