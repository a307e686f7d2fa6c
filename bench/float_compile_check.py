"""Static compile check of the FP8 / FP4 kernels for GPUs that are not here: the launches the
real dispatcher makes for one 4096x4096 linear (bench/static_cases.py captures), compiled for
sm_90a and, with the e4m3 byte-decode path the dispatcher picks below sm_89, for sm_80.
Reports registers, local-memory stack (spills), shared memory and the MMA instructions in
the SASS (QGMMA: FP8 wgmma; HGMMA / HMMA: 16-bit). No timing: nothing here ran on a GPU.

  .venv/bin/python bench/float_compile_check.py --out bench/results/2026-12-02-float-kernels-compile.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm90_compile import compile_launch  # noqa: E402
from static_cases import capture_linear  # noqa: E402


def rows(n: int = 4096, k: int = 4096):
    for scheme in ("fp8", "fp8-w", "nvfp4a16", "mxfp4a16"):
        for m in (1, 16, 256):
            launches, ops, _ = capture_linear(scheme, torch.bfloat16, n, k, m)
            for launch in launches:
                for arch in (90, 80):
                    meta = dict(launch.meta, NATIVE_FP8=False) if arch == 80 and "NATIVE_FP8" in launch.meta \
                        else launch.meta
                    c = compile_launch(dataclasses.replace(launch, meta=meta), arch)
                    mma = sorted({ln.split()[1].split(".")[0] for ln in c.sass.splitlines()
                                  if "MMA" in ln and len(ln.split()) > 1})
                    yield {"scheme": scheme, "M": m, "N": n, "K": k, "arch": f"sm_{arch}", "kernel": c.name,
                           "regs": c.regs, "stack_bytes": c.stack_bytes, "shared_bytes": c.shared_bytes,
                           "num_warps": c.num_warps, "mma": mma, "torch_ops_around": ops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    out = [r for r in rows()]
    for r in out:
        print(r)
    Path(ap.parse_args().out).write_text(json.dumps(
        {"what": "FP8/FP4 kernel launches compiled with the triton 3.9 wheel's ptxas; no GPU run",
         "hardware": "compiled on a 2-core AMD EPYC VM (AVX-512), no GPU, shared with other jobs",
         "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
