"""Can smoothing or a rotation lower what per-token FP8 activations cost? Per Linear of
chosen SmolLM2 blocks: the relative output error ||Q(X/s) (W s)^T - X W^T||^2 / ||X W^T||^2
of FP8 e4m3 activations alone (weights fp32; the runtime twin's per-token rounding,
act_sensitivity.fake_quant_rows), for SmoothQuant scales
s = max|X|^alpha / max|W|^(1-alpha) at several alphas, and for a random orthogonal
rotation of the inputs (X Q, W Q; QuaRot's idea without its Hadamard).

e4m3's rounding error is relative to each value (3 mantissa bits) as long as a value stays
above the subnormal range, so a per-channel rescaling that W absorbs leaves the error
almost unchanged; the rotation changes it (it spreads every channel over all of them).
Inputs: calibration windows of the WikiText-2 validation split (seed 0).

  python bench/fp8_act_floor.py --blocks 3,12,25 --windows 8 --threads 2

Writes bench/results/<date>-fp8-act-floor.json (every row, the hardware).
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from act_sensitivity import fake_quant_rows
from machine import machine_info
from quality_table import load_fp32

ROOT = Path(__file__).resolve().parent
LINEARS = ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")
ALPHAS = (0.0, 0.5, 0.8, 1.0)


def capture(model, blocks: list[int], ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs [tokens, in] of LINEARS in each block, keyed "block.name"."""
    caps, handles = {}, []
    for b in blocks:
        for name in LINEARS:
            mod = model.model.layers[b].get_submodule(name)
            handles.append(mod.register_forward_pre_hook(
                lambda m, a, key=f"{b}.{name}": caps.setdefault(key, []).append(
                    a[0].detach().reshape(-1, a[0].shape[-1]).float())))
    try:
        with torch.no_grad():
            for i in range(0, len(ids), 4):
                model(ids[i:i + 4])
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in caps.items()}


def rel_error(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> float:
    return float(((fake_quant_rows(x, "fp8") @ w.T - y) ** 2).sum() / (y ** 2).sum())


def main() -> None:
    from qrt.data.windows import calibration_windows
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", default="3,12,25", help="comma-separated decoder block indices")
    ap.add_argument("--windows", type=int, default=8, help="calibration windows of 512 tokens")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/<date>-fp8-act-floor.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok, _ = load_fp32()
    inputs = capture(model, [int(b) for b in args.blocks.split(",")],
                     calibration_windows(tok, None, args.windows, 512, seed=0))
    rows = []
    for key, x in inputs.items():
        w = model.get_submodule("model.layers." + key).weight.detach().float()
        y = x @ w.T
        row = {"linear": key}
        xm, wm = x.abs().amax(dim=0), w.abs().amax(dim=0)
        for alpha in ALPHAS:
            s = (xm ** alpha / wm ** (1 - alpha)).clamp_min(1e-5)
            row[f"alpha_{alpha}"] = rel_error(x / s, w * s, y)
        q, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], dtype=torch.float64))
        row["rotated"] = rel_error(x @ q.float(), w @ q.float(), y)
        rows.append(row)
        print(key, " ".join(f"{k} {v:.2e}" for k, v in row.items() if k != "linear"), flush=True)
    out = Path(args.out or ROOT / "results" / f"{datetime.date.today()}-fp8-act-floor.json")
    out.write_text(json.dumps(dict(model="SmolLM2-135M-Instruct fp32", text="WikiText-2 validation (calibration)",
                                   windows=args.windows, metric="||Q(X) W^T - X W^T||^2 / ||X W^T||^2",
                                   machine=machine_info(torch.device("cpu")), rows=rows), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
