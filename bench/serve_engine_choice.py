"""Should qrt's serving engine build on transformers' continuous batching, or on its own
scheduler? Measures, on one model and one set of requests, side by side in one run:

  serial   transformers `model.generate`, one request at a time (the baseline)
  hf_cb    transformers' own engine as is: `model.generate_batch` (paged cache, CB manager)
  qrt      qrt.LLM.generate: the same engine plus per-request sampling, stop strings, sinks
  alone    qrt.LLM.generate called once per request (the batching-invariance reference)
  qrt_sdpa qrt with batch_invariant=False (transformers' SDPA over the packed batch)

for the fp32 model and the model with its Linear layers swapped for qrt QuantLinear
(RTN via qrt.quantize_model). Greedy outputs are compared: qrt vs alone must be equal
(batching must not change results); vs serial `generate` they may differ where the paged
attention's float rounding differs from the dense cache's and flips a near-tie.

  PYTHONPATH=$PWD/.dev python bench/serve_engine_choice.py --requests 16 --max-tokens 32
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    import os

    import transformers
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "note": "2 CPU cores shared with other jobs: absolute numbers are noisy, ratios are same-run"}


def wikitext_prompts(tokenizer, n: int, path: str) -> list[list[int]]:
    """n prompts of 16..16+4(n-1) tokens cut from WikiText-2 test paragraphs."""
    paras = [p for p in Path(path).read_text().split("\n") if len(p) > 400][:n]
    return [tokenizer(p).input_ids[: 16 + 4 * i] for i, p in enumerate(paras)]


@torch.inference_mode()
def run_serial(model, prompts, max_tokens) -> tuple[float, list[list[int]]]:
    from transformers import GenerationConfig
    # eos -1: never stop early, like ignore_eos in the engines (min_new_tokens would instead
    # mask the EOS logit and change the argmax)
    gc = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    t0, outs = time.perf_counter(), []
    for p in prompts:
        out = model.generate(torch.tensor([p]), generation_config=gc)
        outs.append(out[0, len(p):].tolist())
    return time.perf_counter() - t0, outs


def run_hf_cb(model, prompts, max_tokens) -> tuple[float, list[list[int]]]:
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    gc = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    cb = ContinuousBatchingConfig(page_size=32, num_blocks=128, max_batch_tokens=512, use_cuda_graph=False)
    _pin_hf_loop_threads(torch.get_num_threads())
    t0 = time.perf_counter()
    res = model.generate_batch(prompts, generation_config=gc, continuous_batching_config=cb)
    return time.perf_counter() - t0, [r.generated_tokens for r in res.values()]


def _pin_hf_loop_threads(n: int) -> None:
    """generate_batch's loop thread would otherwise run with OpenMP's default team (all
    cores), not the count set here: the comparison must use the same count everywhere."""
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager as M
    if getattr(M._run_generation_loop, "_qrt_pinned", False):
        return
    loop = M._run_generation_loop

    def pinned(self):
        torch.set_num_threads(n)
        loop(self)
    pinned._qrt_pinned = True
    M._run_generation_loop = pinned


def run_qrt(llm, prompts, max_tokens, alone: bool = False) -> tuple[float, list[list[int]]]:
    """All prompts in one generate call (batched), or one call per prompt (alone)."""
    from qrt.serve.sampling import SamplingParams
    sp = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    groups = [[p] for p in prompts] if alone else [prompts]
    outs = [o for g in groups for o in llm.generate(g, sp, use_tqdm=False)]
    return time.perf_counter() - t0, [o.outputs[0].token_ids for o in outs]


def measure(name, model, tokenizer, prompts, max_tokens) -> dict:
    from qrt.serve.llm import LLM
    n_tok = len(prompts) * max_tokens
    t_serial, ref = run_serial(model, prompts, max_tokens)
    t_hf, hf = run_hf_cb(model, prompts, max_tokens)
    llm = LLM(model, tokenizer, max_num_seqs=len(prompts), num_blocks=128)
    t_qrt, ours = run_qrt(llm, prompts, max_tokens)
    t_alone, alone = run_qrt(llm, prompts, max_tokens, alone=True)
    llm.shutdown()
    llm = LLM(model, tokenizer, max_num_seqs=len(prompts), num_blocks=128, batch_invariant=False)
    t_sdpa, sdpa = run_qrt(llm, prompts, max_tokens)
    llm.shutdown()
    row = {"variant": name, "requests": len(prompts), "max_tokens": max_tokens,
           "serial_s": t_serial, "hf_cb_s": t_hf, "qrt_s": t_qrt,
           "serial_tok_s": n_tok / t_serial, "hf_cb_tok_s": n_tok / t_hf, "qrt_tok_s": n_tok / t_qrt,
           "hf_cb_speedup": t_serial / t_hf, "qrt_speedup": t_serial / t_qrt,
           "hf_cb_greedy_equal": sum(a == b for a, b in zip(hf, ref)),
           "qrt_greedy_equal": sum(a == b for a, b in zip(ours, ref)),
           "qrt_sdpa_s": t_sdpa, "qrt_sdpa_tok_s": n_tok / t_sdpa, "qrt_sdpa_greedy_equal": sum(
               a == b for a, b in zip(sdpa, ref)),
           "qrt_alone_s": t_alone, "qrt_alone_tok_s": n_tok / t_alone,
           "qrt_batched_equal_alone": sum(a == b for a, b in zip(ours, alone)),
           "first_divergence_vs_serial": [_first_diff(a, b) for a, b in zip(ours, ref) if a != b]}
    print(json.dumps(row), flush=True)
    return row


def _first_diff(a: list[int], b: list[int]) -> int:
    """Index of the first differing token."""
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) if a[:len(b)] != b[:len(a)] else min(len(a), len(b))


def decide(rows: list[dict]) -> str:
    """Build on transformers' engine if it is exact and clearly faster than serial."""
    exact = all(r["qrt_batched_equal_alone"] == r["requests"] for r in rows)
    fast = min(r["qrt_speedup"] for r in rows)
    if exact and fast >= 2:
        return (f"build on transformers' continuous batching: greedy outputs batched equal those alone for "
                f"every variant, and qrt's engine on it is >= {fast:.1f}x serial generate's throughput")
    return f"transformers' engine falls short here (exact={exact}, min speedup {fast:.2f}x): own scheduler needed"


def a16_backend(model) -> str:
    from qrt.runtime.linear import QuantLinear
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.finalize()
            rt = getattr(m, "_runtime", None)
            return getattr(rt, "backend", "reference (dequantize every call)")
    return "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--schemes", default="fp32,w4a16")
    ap.add_argument("--text", default="/work/shared/data/wikitext-2/wiki.test.raw")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every variant (1: robust on a shared CPU, see notes)")
    ap.add_argument("--out", default="bench/results/serve_engine_choice.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from qrt import quantize_model
    from qrt.serve.model_loading import load_for_serving
    rows = []
    for scheme in args.schemes.split(","):
        model, tok = load_for_serving(args.model)
        if scheme != "fp32":
            quantize_model(model, scheme, progress=False)
        prompts = wikitext_prompts(tok, args.requests, args.text)
        row = measure(scheme, model, tok, prompts, args.max_tokens)
        row["a16_backend"] = a16_backend(model) if scheme != "fp32" else None
        rows.append(row)
        del model
    out = {"machine": machine(), "model": args.model, "results": rows, "decision": decide(rows)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
