"""Summary of a load run, with vLLM benchmark_serving's names and units (ms, tok/s)."""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict

from qrt.serve.loadgen import LoadSpec, RequestResult


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; 0.0 for no values."""
    if not values:
        return 0.0
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _stats(name: str, seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {f"mean_{name}_ms": statistics.fmean(ms) if ms else 0.0,
            f"median_{name}_ms": percentile(ms, 50), f"p99_{name}_ms": percentile(ms, 99)}


def summarize(results: list[RequestResult], duration: float, spec: LoadSpec | None = None) -> dict:
    ok = [r for r in results if r.success]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    summary = {
        "duration_s": duration, "completed": len(ok), "failed": len(results) - len(ok),
        "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / duration, "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        **_stats("ttft", [r.ttft for r in ok]), **_stats("tpot", tpots),
        **_stats("itl", [g for r in ok for g in r.itl]), **_stats("e2el", [r.latency for r in ok]),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }
    if spec is not None:
        summary["spec"] = {k: "inf" if v == math.inf else v for k, v in asdict(spec).items()}
    return summary


def format_table(s: dict, title: str = "Serving Benchmark Result") -> str:
    rows = [("Successful requests:", s["completed"]), ("Failed requests:", s["failed"]),
            ("Benchmark duration (s):", f"{s['duration_s']:.2f}"),
            ("Total input tokens:", s["total_input_tokens"]), ("Total generated tokens:", s["total_output_tokens"]),
            ("Request throughput (req/s):", f"{s['request_throughput']:.2f}"),
            ("Output token throughput (tok/s):", f"{s['output_throughput']:.2f}"),
            ("Total token throughput (tok/s):", f"{s['total_token_throughput']:.2f}")]
    for key, label in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")):
        rows.append((f"-----{label}-----", None))
        for stat in ("mean", "median", "p99"):
            rows.append((f"{stat.capitalize() if stat != 'p99' else 'P99'} {key.upper()} (ms):",
                         f"{s[f'{stat}_{key}_ms']:.2f}"))
    width = 50
    lines = [f"{' ' + title + ' ':=^{width}}"]
    for label, value in rows:
        lines.append(f"{label:{'-' if value is None else ' '}^{width}}" if value is None
                     else f"{label:<40}{value:>10}")
    lines.append("=" * width)
    if s["errors"]:
        lines.append("errors: " + "; ".join(s["errors"]))
    return "\n".join(lines)
