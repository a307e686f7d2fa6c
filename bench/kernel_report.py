"""Turn kernel-sweep rows into speedups, target verdicts, a table and a plot."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench_common import verdict_line

BASELINES = ("torch_fp16", "torch_bf16", "torch_fp32", "torch_int4", "torch_int8")


def add_speedups(rows: list[dict]) -> None:
    """row['speedup_vs_<baseline>'] = baseline ms / row ms, same shape and M, same run."""
    by_point = defaultdict(dict)
    for r in rows:
        if "ms" in r and r["kind"] != "act_quant":  # the activation quant alone is no matmul
            by_point[(r["N"], r["K"], r["M"])][r["candidate"]] = r
    for point in by_point.values():
        for r in point.values():
            for b in BASELINES:
                if b in point and b != r["candidate"]:
                    r[f"speedup_vs_{b}"] = point[b]["ms"] / r["ms"]


def _pick(rows, cand, **where):
    return [r for r in rows if r["candidate"] == cand and "ms" in r
            and all(r[k] == v if not callable(v) else v(r[k]) for k, v in where.items())]


def _target(name: str, values: list[float], threshold: float, higher_is_better: bool = True) -> dict:
    """A verdict on the worst measured value; met=None when nothing was measured."""
    if not values:
        return {"name": name, "value": None, "threshold": threshold, "met": None}
    worst = min(values) if higher_is_better else max(values)
    met = worst >= threshold if higher_is_better else worst <= threshold
    return {"name": name, "value": round(worst, 3), "threshold": threshold, "met": met}


def _max_neighbour_jump(rows, cand) -> list[float]:
    """max over shapes of t(M_next)/t(M) - 1 for consecutive measured M in 1..256."""
    jumps, by_shape = [], defaultdict(list)
    for r in _pick(rows, cand, M=lambda m: m <= 256):
        by_shape[(r["N"], r["K"])].append((r["M"], r["ms"]))
    for pts in by_shape.values():
        pts.sort()
        jumps += [b[1] / a[1] - 1 for a, b in zip(pts, pts[1:])]
    return jumps


def evaluate_targets(rows: list[dict], device_type: str) -> list[dict]:
    """The issue's targets, judged on QuantLinear.forward (what a user runs)."""
    if device_type == "cpu":
        return [_target(f"CPU {s} M=1 4096x4096 speedup vs fp32 F.linear",
                        [r["speedup_vs_torch_fp32"] for r in _pick(rows, f"qrt_{s}", N=4096, K=4096, M=1)], 5.0)
                for s in ("w4a16", "w8a16")]
    w4, sq, big = "qrt_w4a16", dict(N=8192, K=8192), dict(N=8192, K=28672)
    return [
        _target("W4A16 M=1 8192x8192 % copy bandwidth", [r["pct_copy_bw"] for r in _pick(rows, w4, M=1, **sq)], 70),
        _target("W4A16 M=1 8192x28672 % copy bandwidth", [r["pct_copy_bw"] for r in _pick(rows, w4, M=1, **big)], 85),
        _target("W4A16 M=1 8192x8192 speedup vs fp16", [r["speedup_vs_torch_fp16"] for r in _pick(rows, w4, M=1, **sq)], 2.7),
        _target("W4A16 M=1 speedup vs torch int4 (all shapes)",
                [r["speedup_vs_torch_int4"] for r in _pick(rows, w4, M=1) if "speedup_vs_torch_int4" in r], 1.15),
        _target("W4A16 M=16 speedup vs fp16 (8192 shapes)",
                [r["speedup_vs_torch_fp16"] for r in _pick(rows, w4, M=16, N=8192)], 2.5),
        _target("W4A16 speedup vs fp16, every shape and M <= 4096",
                [r["speedup_vs_torch_fp16"] for r in _pick(rows, w4)], 0.95),
        _target("W4A16 latency jump between neighbouring M (1..256)", _max_neighbour_jump(rows, w4), 0.05,
                higher_is_better=False),
        _target("W8A8 speedup vs bf16 at M >= 1024",
                [r["speedup_vs_torch_bf16"] for r in _pick(rows, "qrt_w8a8", M=lambda m: m >= 1024)], 1.6),
    ]


def print_table(report: dict) -> None:
    base = "torch_fp32" if report["machine"]["device_type"] == "cpu" else "torch_fp16"
    print(f"\n{report['machine']['device_name']}  copy bandwidth {report['copy_bandwidth_GBps']:.1f} GB/s")
    print(f"{'NxK':>12} {'M':>5} {'candidate':<24} {'ms':>9} {'GB/s':>8} {'TFLOP/s':>8} {'%copy':>6} "
          f"{'x' + base:>12} {'x int4':>7} {'err':>8}")
    for r in report["results"]:
        if "ms" not in r:
            continue
        print(f"{r['N']:>6}x{r['K']:<5} {r['M']:>5} {r['candidate']:<24} {r['ms']:>9.4f} {r['GBps']:>8.1f} "
              f"{r['TFLOPs']:>8.2f} {r['pct_copy_bw']:>6.1f} {r.get('speedup_vs_' + base, 1.0):>12.2f} "
              f"{r.get('speedup_vs_torch_int4', float('nan')):>7.2f} {r['rel_err']:>8.1e}{'' if r['ok'] else ' BAD'}")
    for t in report["targets"]:
        print(f"target: {verdict_line(t)}")
    for e in report["errors"]:
        print(f"error: {e}")


def plot_speedups(report: dict, path: Path) -> Path | None:
    """One panel per shape: speedup over the dense baseline vs M (log2 axis)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    base = "torch_fp32" if report["machine"]["device_type"] == "cpu" else "torch_fp16"
    measured = {(r["N"], r["K"]) for r in report["results"]}
    shapes = [tuple(s) for s in report["config"]["shapes_NxK"] if tuple(s) in measured]
    if not shapes:
        return None
    cols = min(3, len(shapes))
    rows_n = -(-len(shapes) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
    for ax, (n, k) in zip(axes.flat, shapes):
        series = defaultdict(list)
        for r in report["results"]:
            if (r["N"], r["K"]) == (n, k) and f"speedup_vs_{base}" in r and r["kind"] != "act_quant":
                series[r["candidate"]].append((r["M"], r[f"speedup_vs_{base}"]))
        for name, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_title(f"N={n} K={k}", fontsize=9)
        ax.set_xlabel("M")
        ax.set_ylabel(f"speedup vs {base}")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    m = report["machine"]
    where = f"{m['torch_threads']} threads, " if m["device_type"] == "cpu" else f"driver {m.get('driver')}, "
    fig.suptitle(f"{m['device_name']} ({where}torch {m['torch']}, triton {m.get('triton')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
