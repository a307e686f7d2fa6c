"""CPU decode check of the WxA16 target: QuantLinear at M=1 on 4096x4096 against fp32
F.linear, measured side by side in one run (the full sweep is bench_kernels.py).

    PYTHONPATH=.dev python bench/cpu_a16_decode.py [--size 4096] [--reps 200] [--threads N]

Prints the median time of each and the speedup over fp32 F.linear, with the CPU named.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from machine import cpu_model
from qrt.runtime.linear import QuantLinear


def interleaved_medians_us(fns: dict, reps: int) -> dict:
    """Median time of each fn, timed round-robin so load from other processes on a shared
    machine hits every candidate alike."""
    for fn in fns.values():  # warm-up: first calls pay for allocation and thread start-up
        for _ in range(10):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1e6 for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = k = args.size
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False)
    layers = {name: QuantLinear.from_linear(lin, name) for name in ("w4a16", "w8a16")}
    for layer in layers.values():
        layer.finalize()
    # fresh inputs per rep would add a copy to both sides; one random x, never zeros
    x = torch.randn(1, k)
    fns = {"fp32 F.linear": lambda: F.linear(x, lin.weight)}
    for name, layer in layers.items():
        fns[f"{name} QuantLinear ({layer._runtime.backend})"] = lambda layer=layer: layer(x)
    with torch.inference_mode():
        rows = list(interleaved_medians_us(fns, args.reps).items())
    base = rows[0][1]
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"M=1, {n}x{k}, median of {args.reps}")
    for name, us in rows:
        print(f"  {name:36s} {us:9.1f} us   {base / us:5.2f}x vs fp32 F.linear")


if __name__ == "__main__":
    main()
