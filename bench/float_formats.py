"""FP8 / FP4 quality and size on SmolLM2 through the CLI a user runs, side by side in one run:

  qrt quantize smollm2 --scheme S --out DIR;  qrt eval ppl DIR --max-windows N --json F
  (fp32: qrt eval ppl smollm2)

for fp32, fp8 (W8A8-FP8 dynamic), fp8-w, nvfp4a16, mxfp4a16 and w4a16 g128 RTN, every
command with OMP_NUM_THREADS=1. Sizes: the quantized Linear layers' bytes (codes + scales)
against the same layers in fp16 (embedding and lm_head excluded), from the checkpoint files.

  .venv/bin/python bench/float_formats.py --windows 8 --out bench/results/2026-12-02-float-formats-smollm2.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ["fp32", "fp8", "fp8-w", "nvfp4a16", "mxfp4a16", "w4a16"]
# rows of bench/quality_table.py on the same windows and eval code (perplexity is deterministic),
# reported next to ours when --reuse names them instead of re-running them
QUALITY_RUNS = Path(__file__).resolve().parent / "results" / "quality_runs"
HARDWARE = "2-core AMD EPYC VM (AVX-512), no GPU, shared with other jobs"


def run(cmd: list[str], timeout: int = 1800) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "qrt", *cmd], check=True, env=env, timeout=timeout,
                   stdout=subprocess.DEVNULL)
    return time.time() - t0


def layer_sizes(ckpt: Path) -> dict:
    from qrt.checkpoint.info import checkpoint_info
    info = checkpoint_info(ckpt)
    quant = [la for la in info.layers if la.bits is not None]
    q_bytes = sum(la.nbytes for la in quant)
    fp16 = sum(2 * la.shape[0] * la.shape[1] for la in quant)
    return {"quantized_layers": len(quant), "layer_bytes": q_bytes, "layer_bytes_fp16": fp16,
            "layer_ratio_vs_fp16": q_bytes / fp16, "file_bytes": info.file_bytes,
            "file_ratio_vs_fp16": info.ratio_vs_fp16}


def run_config(name: str, windows: int, tmp: Path) -> dict:
    res_file = tmp / f"{name}.json"
    row: dict = {"config": name}
    model = "smollm2"
    if name != "fp32":
        model = str(tmp / name)
        row["quantize_seconds"] = run(["quantize", "smollm2", "--scheme", name, "--out", model])
        row.update(layer_sizes(Path(model)))
    row["eval_seconds"] = run(["eval", "ppl", model, "--max-windows", str(windows), "--json", str(res_file)])
    ppl = json.loads(res_file.read_text())
    row.update({k: ppl[k] for k in ("ppl", "nll", "tokens", "windows", "window_len")})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--reuse", default="", help="quality_table configs to copy in, e.g. fp32,w4a16-g128-rtn")
    args = ap.parse_args()
    rows = []
    for name in filter(None, args.reuse.split(",")):
        r = json.loads((QUALITY_RUNS / f"{name}__w{args.windows}.json").read_text())
        rows.append({"config": name, "source": f"bench/results/quality_runs/{name}__w{args.windows}.json",
                     **{k: r[k] for k in ("ppl", "nll", "tokens", "windows", "window_len")}})
    with tempfile.TemporaryDirectory() as d:
        for name in args.only.split(","):
            rows.append(run_config(name, args.windows, Path(d)))
            print(json.dumps(rows[-1]), flush=True)
    fp = next((r["ppl"] for r in rows if r["config"] == "fp32"), None)
    for r in rows:
        if fp:
            r["ppl_vs_fp32"] = r["ppl"] / fp - 1
    import torch
    out = {"what": "SmolLM2-135M-Instruct (embedded GGUF, fp32), WikiText-2 raw test, qrt eval ppl, "
                   f"first {args.windows} windows; RTN; CPU path (fp32 compute)",
           "hardware": HARDWARE, "threads": 1, "torch": torch.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d"), "runs": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
