#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from a kernel-sweep or decode JSON.

    python bench/results_markdown.py bench/results/kernels_cpu.json [--m 1,16,128]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _header(m: dict, extra: str = "") -> str:
    where = m.get("device_name")
    if m["device_type"] == "cuda":
        where += f", driver {m.get('driver')}, CUDA {m.get('cuda_runtime')}"
    else:
        where += f" ({m['cpu_count']} cores, {m['torch_threads']} torch threads, load average {m.get('load_average_1m') or 0:.1f})"
    return f"Measured on {where}; torch {m['torch']}, triton {m.get('triton')}, commit {m.get('git_commit')}.{extra}\n"


def kernel_tables(rep: dict, ms: list[int] | None) -> str:
    """Per shape: rows = M, cells = ms per call and speedup over the dense baseline."""
    base = "torch_fp32" if rep["machine"]["device_type"] == "cpu" else "torch_fp16"
    rows = [r for r in rep["results"] if "ms" in r and (not ms or r["M"] in ms) and r["kind"] != "act_quant"]
    cands = list(dict.fromkeys(r["candidate"] for r in rows))
    out = [_header(rep["machine"], f" Copy bandwidth measured in the same run: "
                                    f"{rep['copy_bandwidth_GBps']:.1f} GB/s (read + write).")]
    for n, k in [tuple(s) for s in rep["config"]["shapes_NxK"]]:
        pts = {(r["M"], r["candidate"]): r for r in rows if (r["N"], r["K"]) == (n, k)}
        if not pts:
            continue
        out.append(f"\n**N={n} (out) x K={k} (in)**: ms per call (speedup vs {base}; % of copy bandwidth)\n")
        out.append("| M | " + " | ".join(cands) + " |")
        out.append("|---:|" + "---:|" * len(cands))
        for m in sorted({m for m, _ in pts}):
            cells = []
            for c in cands:
                r = pts.get((m, c))
                cells.append("" if r is None else
                             f"{r['ms']:.3g} ({r.get('speedup_vs_' + base, 1.0):.2f}x; {r['pct_copy_bw']:.0f}%)")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    out.append("")
    for t in rep.get("targets", []):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        out.append(f"- target {t['name']}: {t['value']} (threshold {t['threshold']}): {verdict}")
    return "\n".join(out) + "\n"


def decode_table(rep: dict) -> str:
    model = rep["config"]["model"]
    out = [_header(rep["machine"], f" Model: {model.get('num_hidden_layers')} layers, hidden "
                                    f"{model.get('hidden_size')}, vocab {model.get('vocab_size')}."),
           "| scheme | batch | tokens/s | ms/step | vs dense | mode |", "|---|---:|---:|---:|---:|---|"]
    for r in rep["results"]:
        if "tokens_per_s" in r:
            out.append(f"| {r['scheme']} | {r['batch']} | {r['tokens_per_s']:.1f} | {r['ms_per_step']:.2f} | "
                       f"{r.get('speedup_vs_dense', float('nan')):.2f}x | {r['mode']} |")
    out.append("")
    for c in rep.get("compile_checks", []):
        out.append(f"- torch.compile(fullgraph=True, backend={c['backend']}) {c['scheme']}: "
                   f"{'no graph breaks' if c['fullgraph_ok'] else 'FAILED: ' + c.get('error', '')}")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("json")
    p.add_argument("--m", default=None, help="comma list of M to show (kernel sweeps)")
    a = p.parse_args(argv)
    rep = json.loads(Path(a.json).read_text())
    ms = [int(v) for v in a.m.split(",")] if a.m else None
    print(decode_table(rep) if "compile_checks" in rep else kernel_tables(rep, ms))


if __name__ == "__main__":
    main()
