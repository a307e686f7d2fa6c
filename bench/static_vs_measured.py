#!/usr/bin/env python3
"""Measured GPU time next to the static sm_90 estimate, row by row.

    python bench/static_vs_measured.py OUTDIR/kernels_<gpu>.json bench/results/<date>-gpu-static.json

For each qrt kernel row of the sweep (scheme, N, K, M, dtype) it prints the measured time,
the static t_issue and t_mem (H200 constants) and the floor max(t_issue, t_mem), the
measured time over that floor, and the speedups over torch bf16 (cuBLAS) and torch's
int4 weight-only kernel (tinygemm) measured in the same run. Writes <sweep>_vs_static.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def join(sweep: dict, static: dict) -> list[dict]:
    est = {(r["scheme"], r["dtype"], r["N"], r["K"], r["M"]): r for r in static["rows"] if r.get("ratio") is not None}
    dtype_names = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
    out = []
    for r in sweep["results"]:
        if r.get("kind") not in ("qrt", "qrt_dispatch"):
            continue
        key = (r["scheme"], dtype_names.get(r["x_dtype"], r["x_dtype"]), r["N"], r["K"], r["M"])
        s = est.get(key)
        if s is None or "ms" not in r:
            continue
        floor_us = max(s["t_issue_us"], s["t_mem_us"])
        out.append({"candidate": r["candidate"], "scheme": r["scheme"], "dtype": key[1], "N": r["N"], "K": r["K"],
                    "M": r["M"], "measured_us": r["ms"] * 1e3, "t_issue_us": s["t_issue_us"],
                    "t_mem_us": s["t_mem_us"], "static_ratio": s["ratio"], "measured_over_floor": r["ms"] * 1e3 / floor_us,
                    "speedup_vs_torch_bf16": r.get("speedup_vs_torch_bf16"),
                    "speedup_vs_torch_int4": r.get("speedup_vs_torch_int4"), "ok": r.get("ok")})
    return out


def main(sweep_path: str, static_path: str) -> None:
    sweep, static = json.loads(Path(sweep_path).read_text()), json.loads(Path(static_path).read_text())
    rows = join(sweep, static)
    dev = sweep["machine"].get("device_name")
    print(f"==== measured on {dev} vs static estimate ({Path(static_path).name}) ====")
    print(f"{'candidate':<20} {'dtype':<5} {'NxK':>11} {'M':>5} {'meas us':>8} {'t_issue':>8} {'t_mem':>8} "
          f"{'meas/floor':>10} {'x bf16':>7} {'x int4':>7}")
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{r['candidate']:<20} {r['dtype']:<5} {r['N']:>5}x{r['K']:<5} {r['M']:>5} {r['measured_us']:>8.2f} "
              f"{r['t_issue_us']:>8.2f} {r['t_mem_us']:>8.2f} {r['measured_over_floor']:>10.2f} "
              f"{f(r['speedup_vs_torch_bf16']):>7} {f(r['speedup_vs_torch_int4']):>7}")
    out = Path(sweep_path).with_name(Path(sweep_path).stem + "_vs_static.json")
    out.write_text(json.dumps({"device": dev, "static_report": Path(static_path).name, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
