"""Single-stream decode on the embedded SmolLM2: qrt's engine (qrt.engine.LLMEngine) against
today's path (transformers' generate on the same qrt model), per scheme, alternating in one
run so machine load hits both alike.

    python bench/engine_decode.py [--schemes fp32,w4a16,w8a16,w8a8] [--tokens 64] [--rounds 3]
                                  [--compile-probe] [--out bench/results/2026-12-02-engine-decode.json]

decode tok/s = (N - 1) / (t(N tokens) - t(1 token)): prefill and set-up cancel out.
--compile-probe also times one decode step of a 2-layer SmolLM2-shaped model eagerly and
under torch.compile (inductor, default and C++ wrapper), with the time the compile took.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

PROMPT = "The history of the city begins in the early middle ages, when"


def build(scheme: str):
    """(hf_model, tokenizer) of SmolLM2 in fp32, RTN-quantized in place unless scheme == fp32."""
    import qrt
    from qrt.hub import load_fp_model
    from qrt.hub.embedded import smollm2_dir
    model, tok = load_fp_model(smollm2_dir(), dtype=torch.float32)
    if scheme != "fp32":
        qrt.quantize_model(model, scheme, progress=False)
    return model, tok


def engine_for(model):
    from qrt.engine.llm_engine import LLMEngine
    from qrt.engine.scheduler import SchedulerConfig
    return LLMEngine(model, SchedulerConfig(num_blocks=32, page_size=16, max_model_len=256), eos_token_ids=[])


def timers(model, tok, tokens: int):
    """name -> fn(n) generating n greedy tokens, returning the token ids."""
    from qrt import SamplingParams
    ids = tok(PROMPT, return_tensors="pt").input_ids
    eng = engine_for(model)

    def run_engine(n):
        return eng.generate([ids[0].tolist()], SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))[0]

    def run_hf(n):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=tok.eos_token_id)
        return out[0, ids.shape[1]:].tolist()
    return {"engine": run_engine, "hf_generate": run_hf}


def decode_rate(fn, tokens: int) -> float:
    t0 = time.perf_counter()
    fn(1)
    t1 = time.perf_counter()
    fn(tokens)
    t2 = time.perf_counter()
    return (tokens - 1) / ((t2 - t1) - (t1 - t0))


def compile_probe(steps: int = 32) -> dict:
    """Decode-step time of a 2-layer SmolLM2-shaped fp32 model: eager vs torch.compile."""
    import transformers as tf

    from qrt import SamplingParams
    from qrt.hub.embedded import smollm2_dir
    cfg = tf.AutoConfig.from_pretrained(smollm2_dir())
    cfg.num_hidden_layers = 2
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    out = {}
    for mode in ("eager", "inductor", "inductor_cpp_wrapper"):
        import torch._inductor.config as ic
        torch._dynamo.reset()
        ic.cpp_wrapper = mode == "inductor_cpp_wrapper"
        eng = engine_for(model)
        if mode != "eager":
            eng.runner.model.forward = torch.compile(eng.runner.model.forward, dynamic=True)
        prompt = list(range(10, 30))
        t0 = time.perf_counter()
        eng.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
        warm = time.perf_counter() - t0
        rate = decode_rate(lambda n: eng.generate([prompt], SamplingParams(temperature=0, max_tokens=n,
                                                                            ignore_eos=True)), steps)
        out[mode] = {"decode_step_ms": round(1e3 / rate, 3), "warmup_s": round(warm, 1)}
        print(mode, out[mode], flush=True)
    torch._inductor.config.cpp_wrapper = False
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemes", default="fp32,w4a16,w8a16,w8a8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile-probe", action="store_true")
    ap.add_argument("--out", default="bench/results/2026-12-02-engine-decode.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    schemes = args.schemes.split(",")
    runs = {s: timers(*build(s), args.tokens) for s in schemes}
    agree = {}
    with torch.inference_mode():
        for s, fns in runs.items():  # same greedy tokens? (bf16 CPU kernels may flip near-ties)
            a, b = fns["engine"](args.tokens), fns["hf_generate"](args.tokens)
            agree[s] = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        rates = {s: {k: [] for k in fns} for s, fns in runs.items()}
        for r in range(args.rounds):
            for s, fns in runs.items():
                for k, fn in fns.items():
                    rates[s][k].append(decode_rate(fn, args.tokens))
            print(f"round {r}:", {s: {k: round(v[-1], 1) for k, v in d.items()} for s, d in rates.items()},
                  flush=True)
    table = {s: {"engine_tok_s": round(statistics.median(d["engine"]), 1),
                 "hf_generate_tok_s": round(statistics.median(d["hf_generate"]), 1),
                 "engine_over_hf": round(statistics.median(d["engine"]) / statistics.median(d["hf_generate"]), 2),
                 "greedy_tokens_equal_before_first_difference": agree[s],
                 "all_rounds": {k: [round(x, 1) for x in v] for k, v in d.items()}} for s, d in rates.items()}
    report = {"what": "single-stream greedy decode, embedded SmolLM2-135M-Instruct, prompt of "
                      f"{len(PROMPT.split())} words, {args.tokens} new tokens, median of {args.rounds} alternating rounds",
              "hardware": "2-core AMD EPYC VM (AVX-512), no GPU, shared with other jobs",
              "threads": args.threads, "machine": machine_info(torch.device("cpu")), "results": table,
              "llama_cpp_reference_tok_s": {"Q4_1": 83, "F16": 81, "Q4_0": 136,
                                            "note": "measured earlier on this box (issue 14), not in this run"}}
    if args.compile_probe:
        report["compile_probe_2_layers"] = compile_probe()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(__import__("json").dumps(report, indent=1, default=str))
    for s, row in table.items():
        print(f"{s:6s} engine {row['engine_tok_s']:6.1f} tok/s   hf generate {row['hf_generate_tok_s']:6.1f} tok/s"
              f"   {row['engine_over_hf']:.2f}x")


if __name__ == "__main__":
    main()
