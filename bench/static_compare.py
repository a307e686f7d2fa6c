#!/usr/bin/env python3
"""Before/after table of two static sm_90 reports (bench/gpu_static.py), as markdown.

    python bench/static_compare.py BEFORE.json AFTER.json [--m 1] [--schemes w4a16,w8a16] [--dtype bf16]

Per shape: t_issue / t_mem before and after, launches per linear, hot-loop instructions
and barriers, and the static speedup ceiling over fp16 at the same M: the fp16 weight
stream (2 bytes per weight, memory-bound) over max(t_issue, t_mem) of the kernel.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import static_model as sm


def _index(report: dict) -> dict:
    return {(r["scheme"], r["dtype"], r["N"], r["K"], r["M"]): r for r in report["rows"] if r.get("ratio") is not None}


def _main_loop(r: dict) -> dict:
    lp = max(r["launches"], key=lambda x: x.get("warp_instructions", 0))
    return lp.get("loop") or {}


def fp16_ceiling(r: dict) -> float:
    """fp16 GEMV time (weights, x, y once each at copy bandwidth) over this kernel's floor."""
    fp16_bytes = 2 * (r["N"] * r["K"] + r["M"] * r["K"] + r["M"] * r["N"])
    return sm.t_mem_s(fp16_bytes) * 1e6 / max(r["t_issue_us"], r["t_mem_us"])


def compare(before: dict, after: dict, m: int, schemes: list[str], dtype: str) -> str:
    b, a = _index(before), _index(after)
    lines = ["| scheme | N x K | ratio before | ratio after | launches before / after | loop instr before / after "
             "| BAR before / after | fp16 speedup ceiling before / after |", "|" + "---|" * 8]
    for key in sorted(a, key=lambda k: (k[0], k[2] * k[3], k[2])):
        if key[0] not in schemes or key[1] != dtype or key[4] != m or key not in b:
            continue
        rb, ra = b[key], a[key]
        lb, la = _main_loop(rb), _main_loop(ra)
        lines.append(f"| {key[0]} | {key[2]}x{key[3]} | {rb['ratio']:.2f} | {ra['ratio']:.2f} | "
                     f"{rb['kernel_launches']} / {ra['kernel_launches']} | {lb.get('instructions')} / {la.get('instructions')} | "
                     f"{lb.get('barriers')} / {la.get('barriers')} | {fp16_ceiling(rb):.2f}x / {fp16_ceiling(ra):.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--schemes", default="w4a16,w8a16")
    p.add_argument("--dtype", default="bf16")
    a = p.parse_args(argv)
    print(compare(json.loads(Path(a.before).read_text()), json.loads(Path(a.after).read_text()), a.m,
                  a.schemes.split(","), a.dtype))


if __name__ == "__main__":
    main()
