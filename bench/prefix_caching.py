"""Prefix caching on vs off in qrt's engine, on the embedded SmolLM2, alternating in one run.

Two workloads of 16 requests each, all admitted together (continuous batching):
  shared   one long system prompt (--prefix-tokens) + a short distinct question per request:
           with caching on, the prefix's full blocks are computed once and then reused;
  distinct prompts of the same length with nothing in common: what caching costs when it
           never hits (one chained hash per full block, the lookups).
Reported: wall time per workload (median over rounds), prompt tokens served from the cache,
and whether the greedy outputs with caching equal those without. The issue asks for prefix
caching on by default only if it measures faster; docs/engine.md records the decision.

    python bench/prefix_caching.py [--scheme fp32] [--rounds 3] [--out bench/results/DATE-prefix-caching.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_decode import build  # noqa: E402
from machine import machine_info  # noqa: E402

QUESTIONS = [f"Question {i}: in one sentence, what is the role of item number {i} in the text above?"
             for i in range(16)]


def workloads(tok, prefix_tokens: int) -> dict[str, list[list[int]]]:
    text = " ".join(f"Paragraph {i}. The committee met in the town hall and discussed the budget, "
                     f"the roads, the school and the harbour, and item {i} was approved." for i in range(200))
    prefix = tok(text).input_ids[:prefix_tokens]
    shared = [prefix + tok(" " + q).input_ids for q in QUESTIONS]
    # distinct: same lengths, but each prompt starts at a different offset of the text
    ids = tok(text).input_ids
    distinct = [ids[40 * i + 1:40 * i + 1 + len(p)] for i, p in enumerate(shared)]
    return {"shared": shared, "distinct": distinct}


def run_once(model, prompts, caching: bool, max_tokens: int):
    from qrt import SamplingParams
    from qrt.engine.llm_engine import LLMEngine
    from qrt.engine.scheduler import SchedulerConfig
    max_len = max(len(p) for p in prompts) + max_tokens
    page = 16
    cfg = SchedulerConfig(num_blocks=len(prompts) * (-(-max_len // page)) + 8, page_size=page, max_num_seqs=16,
                          max_batch_tokens=512, max_model_len=max_len, enable_prefix_caching=caching)
    eng = LLMEngine(model, cfg, eos_token_ids=[])
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    seqs = [eng.add_request(f"r{i}", p, params) for i, p in enumerate(prompts)]
    t = time.perf_counter()
    done, cached = {}, {}
    with torch.inference_mode():
        while eng.has_unfinished():
            outs = eng.step()
            for s in seqs:  # hits are recorded at admission; finishing resets the count
                cached[s.seq_id] = max(cached.get(s.seq_id, 0), s.num_cached_tokens)
            for out in outs:
                if out.finished:
                    done[out.request_id] = out.sequence.output_ids
    wall = time.perf_counter() - t
    return wall, sum(cached.values()), [done[f"r{i}"] for i in range(len(prompts))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="fp32")
    ap.add_argument("--prefix-tokens", type=int, default=384)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = build(args.scheme)
    loads = {name: prompts for name, prompts in workloads(tok, args.prefix_tokens).items()}
    run_once(model, loads["shared"][:2], True, 2)  # warm-up
    rows: dict[str, dict] = {}
    for r in range(args.rounds):
        for name, prompts in loads.items():
            for caching in (False, True) if r % 2 == 0 else (True, False):  # alternate the order too
                wall, cached, outs = run_once(model, prompts, caching, args.max_tokens)
                row = rows.setdefault(f"{name}/{'on' if caching else 'off'}", {"walls": [], "cached_tokens": cached})
                row["walls"].append(wall)
                row.setdefault("outputs", outs)
                print(f"round {r} {name:8s} caching {'on ' if caching else 'off'}: {wall:6.2f} s, "
                      f"{cached} prompt tokens from the cache", flush=True)
    summary = {}
    for name, prompts in loads.items():
        on, off = rows[f"{name}/on"], rows[f"{name}/off"]
        summary[name] = {"prompt_tokens": sum(len(p) for p in prompts),
                         "wall_s_off": statistics.median(off["walls"]), "wall_s_on": statistics.median(on["walls"]),
                         "speedup_on_vs_off": statistics.median(off["walls"]) / statistics.median(on["walls"]),
                         "cached_tokens_on": on["cached_tokens"], "same_outputs": on["outputs"] == off["outputs"],
                         "walls_off": off["walls"], "walls_on": on["walls"]}
        s = summary[name]
        print(f"{name:8s}: off {s['wall_s_off']:.2f} s, on {s['wall_s_on']:.2f} s -> {s['speedup_on_vs_off']:.2f}x, "
              f"{s['cached_tokens_on']}/{s['prompt_tokens']} prompt tokens cached, same outputs: {s['same_outputs']}")
    result = {"bench": "prefix_caching", "scheme": args.scheme, "threads": args.threads, "requests": 16,
              "prefix_tokens": args.prefix_tokens, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "loadavg_end": os.getloadavg(), "machine": machine_info(torch.device("cpu")), "workloads": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
