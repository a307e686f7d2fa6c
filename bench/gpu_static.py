#!/usr/bin/env python3
"""Static sm_90 report: every kernel launch the dispatcher makes, compiled for an H200
without a GPU, with its resources, hot-loop SASS and a static time estimate.

For each scheme, activation dtype, [N, K] shape and M, the real dispatch entry point runs
on meta tensors under qrt_kernels.launch.capture_launches (132 SMs, "NVIDIA H200"); each
recorded launch is compiled for sm_90a (bench/sm90_compile.py) and its SASS read
(bench/sass_stats.py); bench/static_model.py turns that into t_issue and t_mem.

    python bench/gpu_static.py                    # full matrix -> bench/results/<date>-gpu-static.{json,md}
    python bench/gpu_static.py --quick            # the CI matrix (tests/kernels/test_gpu_static.py)
    python bench/gpu_static.py --schemes w4a16 --m 1 --shapes 4096x4096 --dump /tmp/sass
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import sass_stats  # noqa: E402
import static_model as sm  # noqa: E402
from bench_common import write_report  # noqa: E402
from sm90_compile import PINNED_TRITON, compile_key, compile_launch  # noqa: E402
from static_cases import SCHEMES, capture_linear  # noqa: E402
from static_table import markdown  # noqa: E402

SHAPES = ["4096x4096", "6144x4096", "14336x4096", "4096x14336", "8192x8192", "8192x28672"]
LLAMA3_8B = SHAPES[:4]
M_VALUES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
QUICK = dict(shapes=["4096x4096"], ms=[1, 16, 256], dtypes=["bf16", "fp16"], schemes=list(SCHEMES))
DECODE_RATIO_TARGET = 0.5   # W4A16 / W8A16 at M=1: t_issue <= 0.5 t_mem (issue #13)
HARDWARE = ("static estimate for NVIDIA H200 (132 SMs, 1.98 GHz, 4.3 TB/s copy), compiled on a "
            "2-core AMD EPYC VM (AVX-512), no GPU, shared with other jobs")


def launch_row(launch, cache: dict, dump: Path | None, tag: str) -> dict:
    """Compile (or reuse) one launch and read its resources and hot loop."""
    key = compile_key(launch)
    if key not in cache:
        try:
            c = compile_launch(launch)
            cache[key] = (c, sass_stats.analyse(c.sass), None)
        except Exception as e:  # a row per failure: the report must show it, not stop
            cache[key] = (None, None, f"{type(e).__name__}: {e}"[:600])
    c, st, err = cache[key]
    row = {"kernel": launch.kernel.fn.__name__, "grid": list(launch.grid),
           "meta": {k: v for k, v in launch.meta.items() if not isinstance(v, torch.dtype)}}
    if err:
        return {**row, "compiled": False, "error": err}
    programs, winstr = sm.warp_instructions(launch, c, st)
    loop = st["loop"]
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        (dump / f"{tag}-{c.name}.sass").write_text(c.sass)
        (dump / f"{tag}-{c.name}.ptx").write_text(c.ptx)
    return {**row, "compiled": True, "num_warps": c.num_warps, "programs": programs,
            "waves_132": round(sm.waves(programs), 3), "shared_bytes": c.shared_bytes,
            "smem_ok_sm90": c.shared_bytes <= sm.SMEM_LIMIT_SM90,
            "smem_ok_sm89": c.shared_bytes <= sm.SMEM_LIMIT_SM89,
            "regs": c.regs, "stack_bytes": c.stack_bytes,
            "spills": c.stack_bytes > 0 or st["total"].local_accesses > 0,
            "loop": None if loop is None else vars(loop),
            "outside_loop_instructions": st["outside_loop_instructions"],
            "warp_instructions": winstr, "t_issue_us": sm.t_issue_s(winstr) * 1e6}


def linear_row(scheme: str, dtype: str, n: int, k: int, m: int, cache: dict, dump: Path | None) -> dict:
    row = {"scheme": scheme, "dtype": dtype, "N": n, "K": k, "M": m}
    try:
        launches, torch_ops, nbytes = capture_linear(scheme, DTYPES[dtype], n, k, m)
    except Exception as e:
        return {**row, "ok": False, "error": f"dispatch: {type(e).__name__}: {e}"[:600]}
    tag = f"{scheme}-{dtype}-{n}x{k}-m{m}"
    rows = [launch_row(lp, cache, dump, f"{tag}-{i}") for i, lp in enumerate(launches)]
    t_issue = sum(r.get("t_issue_us", 0.0) for r in rows)
    t_mem = sm.t_mem_s(nbytes) * 1e6
    return {**row, "ok": all(r["compiled"] for r in rows), "launches": rows, "torch_ops": torch_ops,
            "kernel_launches": len(rows) + len(torch_ops), "bytes": nbytes,
            "t_mem_us": t_mem, "t_issue_us": t_issue, "ratio": t_issue / t_mem if t_mem else None}


def run(shapes, ms, dtypes, schemes, dump: Path | None, log=print) -> dict:
    cache, rows, t0 = {}, [], time.perf_counter()
    for scheme in schemes:
        for dtype in dtypes:
            for shape in shapes:
                n, k = (int(v) for v in shape.split("x"))
                for m in ms:
                    rows.append(linear_row(scheme, dtype, n, k, m, cache, dump))
                    r = rows[-1]
                    log(f"{scheme:12s} {dtype} {shape:>10s} M={m:<5d} " +
                        (f"ratio {r['ratio']:.2f}" if r.get("ratio") is not None else r.get("error", "error")[:120]))
    return {"hardware": HARDWARE, "triton": PINNED_TRITON, "torch": torch.__version__,
            "constants": {"sms": sm.H200_SMS, "schedulers_per_sm": sm.H200_SCHEDULERS_PER_SM,
                          "sm_clock_hz": sm.H200_SM_CLOCK_HZ, "copy_bytes_per_s": sm.H200_COPY_BYTES_PER_S,
                          "smem_limit_sm90": sm.SMEM_LIMIT_SM90, "smem_limit_sm89": sm.SMEM_LIMIT_SM89},
            "decode_ratio_target": DECODE_RATIO_TARGET, "specializations_compiled": len(cache),
            "wall_s": round(time.perf_counter() - t0, 1), "rows": rows}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", help="comma list of NxK (N out, K in); default: the 8B and 70B shapes")
    p.add_argument("--m", help="comma list of M")
    p.add_argument("--dtypes", default="bf16,fp16", help="activation dtypes (bf16, fp16, fp32)")
    p.add_argument("--schemes", help=f"default: all ({','.join(SCHEMES)})")
    p.add_argument("--quick", action="store_true", help="the CI matrix")
    p.add_argument("--dump", help="keep each launch's .sass and .ptx in this folder")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--name", default="gpu-static", help="result file name after the date")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    q = QUICK if a.quick else {}
    shapes = a.shapes.split(",") if a.shapes else q.get("shapes", SHAPES)
    ms = [int(v) for v in a.m.split(",")] if a.m else q.get("ms", M_VALUES)
    schemes = a.schemes.split(",") if a.schemes else q.get("schemes", list(SCHEMES))
    report = run(shapes, ms, a.dtypes.split(","), schemes, Path(a.dump) if a.dump else None)
    stem = Path(a.out) / f"{datetime.date.today().isoformat()}-{a.name}"
    write_report(stem.with_suffix(".json"), report)
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and .md ({report['specializations_compiled']} specializations, {report['wall_s']} s)")
    return report


if __name__ == "__main__":
    main()
