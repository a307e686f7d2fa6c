"""qrt's AWQ against llmcompressor's AWQModifier on SmolLM2, block by block, on the same
calibration windows: the folded norm weights (they hold 1/s of the q/k/v and gate/up
mappings) and the quantized Linear weights, then both models' perplexity (8 windows).

  python bench/awq_vs_llmc.py --llmc-dir DIR --nsamples 2 --seqlen 64 --out F.json

DIR: what bench/quality_table.py's llmc_smooth() left (w.pt, spec.json, ckpt/), i.e. an
AWQModifier + QuantizationModifier (W4A16, qrt's per-layer group sizes, fp32 scales) run.
Block 0 sees the same fp inputs in both, so the same grid points must win there; later
blocks see inputs that already differ (quantized earlier blocks), so they drift.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmc-dir", required=True)
    ap.add_argument("--nsamples", type=int, required=True)
    ap.add_argument("--seqlen", type=int, required=True)
    ap.add_argument("--windows", type=int, default=8, help="perplexity windows (0: compare weights only)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import quality_table as qt
    from qrt import load_quantized
    from qrt.data.windows import calibration_windows
    from qrt.eval.ppl import perplexity, tokenize_eval_text
    from qrt.quantize.awq import AWQ, AWQConfig
    from qrt.quantize.gptq_model import gptq_quantize_model
    from qrt.runtime.linear import QuantLinear
    from qrt.schemes import resolve_scheme

    d = Path(args.llmc_dir)
    model, tok, _ = qt.load_fp32()
    windows = calibration_windows(tok, None, args.nsamples, args.seqlen, seed=0)
    if not torch.equal(windows, torch.load(d / "w.pt")):
        raise SystemExit(f"{d / 'w.pt'}: not the windows nsamples={args.nsamples} seqlen={args.seqlen} seed 0 draws")
    t0 = time.time()
    gptq_quantize_model(model, tok, resolve_scheme("w4a16").replace(scale_dtype="float32"), nsamples=args.nsamples,
                        seqlen=args.seqlen, transform=AWQ(model, AWQConfig()), rounding="rtn", progress=False)
    ours_s = time.time() - t0
    theirs = load_quantized(d / "ckpt", device="cpu", dtype=torch.float32, progress=False)
    blocks = []
    for i, (a, b) in enumerate(zip(model.model.layers, theirs.model.layers)):
        row = {"block": i}
        for n in ("input_layernorm", "post_attention_layernorm"):
            wa, wb = a.get_submodule(n).weight.float(), b.get_submodule(n).weight.float()
            row[n + "_max_rel"] = ((wa - wb).abs() / wb.abs().clamp(min=1e-6)).max().item()
        qa = {n: m.qweight() for n, m in a.named_modules() if isinstance(m, QuantLinear)}
        qb = {n: b.get_submodule(n).qweight() for n in qa}
        # integers, and the fp32 scales (equal up to float32 op order when the same grid point won)
        row["int_equal_frac"] = sum((qa[n].q == qb[n].q).sum().item() for n in qa) / sum(v.q.numel() for v in qa.values())
        row["scale_max_rel"] = max(((qa[n].scale - qb[n].scale).abs() / qb[n].scale.abs()).max().item() for n in qa)
        blocks.append(row)
        print(json.dumps(row), flush=True)
    ids = tokenize_eval_text(tok)
    res = {"nsamples": args.nsamples, "seqlen": args.seqlen, "ours_quantize_seconds": ours_s,
           "llmc_quantize_seconds": json.loads((d / "ckpt.time.json").read_text())["seconds"], "blocks": blocks}
    for name, m in (("qrt", model), ("llmcompressor", theirs)) if args.windows else ():
        r = perplexity(m, ids, max_windows=args.windows)
        res[f"{name}_ppl"] = r.ppl
        print(name, r.ppl, flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
