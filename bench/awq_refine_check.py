"""Does AWQ's refined grid search (AWQConfig.refine) pick what the full grid picks on real
activations? Runs AWQ + GPTQ + clip on the first --blocks SmolLM2 blocks with the full grid,
records every mapping's loss table, and replays refine=k on each table.

  python bench/awq_refine_check.py --blocks 6 --threads 2

Writes bench/results/<date>-awq-refine-check.json: per mapping, the full grid's pick, each
k's pick and its loss excess over the full grid's (0 when they agree), and whether the
losses along the ratio fall then rise (unimodal, what refine relies on).
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
from quality_table import hardware, load_fp32

import qrt.quantize.awq as awq
from qrt.quantize.gptq_model import gptq_quantize_model


def unimodal(values: list[float]) -> bool:
    low = values.index(min(values))
    return all(a > b for a, b in zip(values[:low], values[1:low + 1])) and \
        all(a < b for a, b in zip(values[low:], values[low + 1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-grid", type=int, default=20)
    ap.add_argument("--loss-windows", type=int, default=16)
    ap.add_argument("--loss-tokens", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, _ = load_fp32()
    model.model.layers = model.model.layers[:args.blocks]
    model.config.num_hidden_layers = args.blocks
    tables = []
    full_search = awq.search_grid

    def recording(points, loss, refine):
        table = {p: loss(p) for p in points}
        tables.append(table)
        return full_search(points, table.__getitem__, refine)

    awq.search_grid = recording
    config = awq.AWQConfig(n_grid=args.n_grid, loss_windows=args.loss_windows, loss_tokens=args.loss_tokens)
    gptq_quantize_model(model, tok, "w4a16", nsamples=128, seqlen=512, actorder="weight",
                        transform=awq.AWQ(model, config), clip=True)
    awq.search_grid = full_search
    rows = []
    for i, table in enumerate(tables):
        points = list(table)
        full = full_search(points, table.__getitem__, None)
        ratios = [table[p] for p in points if p[1]]
        row = {"mapping": i, "full_pick": full, "unimodal": unimodal(ratios), "picks": {}}
        for k in (2, 3, 4):
            pick = full_search(points, table.__getitem__, k)
            row["picks"][k] = {"pick": pick, "loss_excess": table[pick] / table[full] - 1 if table[full] else 0.0}
        rows.append(row)
    summary = {k: {"same_pick": sum(r["picks"][k]["pick"] == r["full_pick"] for r in rows),
                   "max_loss_excess": max(r["picks"][k]["loss_excess"] for r in rows)} for k in (2, 3, 4)}
    out = {"date": datetime.date.today().isoformat(), "hardware": hardware(), "blocks": args.blocks,
           "config": {"n_grid": args.n_grid, "loss_windows": args.loss_windows, "loss_tokens": args.loss_tokens},
           "mappings": len(rows), "unimodal": sum(r["unimodal"] for r in rows), "summary": summary, "rows": rows}
    path = Path(__file__).resolve().parent / "results" / f"{out['date']}-awq-refine-check.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("mappings", "unimodal", "summary")}, indent=1))


if __name__ == "__main__":
    main()
