"""The README demo: quantize the embedded SmolLM2-135M-Instruct to W4A16, save it,
load_quantized it back, generate a reply on qrt's engine, and compare with the unquantized
fp32 model (on the same engine) in the same run: checkpoint size vs fp16, load time, peak memory and decode tokens/s.

Each model is loaded in its own child process, so peak RSS and load time belong to that
model alone; decode speed is then measured with both models in one process, in alternating
rounds, so other jobs on a shared machine slow both alike.

    python examples/demo.py [--scheme w4a16] [--new-tokens 64] [--out DIR [--reuse]]
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
from dataclasses import replace

PROMPT = "What is the capital of France? Answer in one sentence."


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """VmHWM: this process's RSS high-water mark (ru_maxrss would include the parent's,
    it survives fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def measure(kind: str, path: str, new_tokens: int) -> dict:
    """Child process: load one model, generate the reply, time decode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from qrt import load_quantized
    from qrt.checkpoint.skeleton import model_class
    from qrt.commands.generate import encode_prompt
    from qrt.serve.request_state import eos_ids
    from qrt.serve.sampling import SamplingParams
    torch.manual_seed(0)
    model_class(AutoConfig.from_pretrained(path))  # import the modeling code before timing (both sides)
    before = rss_mb()
    t0 = time.perf_counter()
    if kind == "fp32":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    else:
        model = load_quantized(path, device="cpu", progress=False)
    load_s = time.perf_counter() - t0
    load_peak = peak_rss_mb()
    tok = AutoTokenizer.from_pretrained(path)
    ids = encode_prompt(tok, PROMPT)[0].tolist()
    engine = make_engine(model, len(ids) + new_tokens, eos_ids(model, tok))
    greedy = SamplingParams(temperature=0)
    # from_pretrained maps the file lazily: its first forward pays for reading the weights
    t = time.perf_counter()
    engine.generate([ids], replace(greedy, max_tokens=1))
    first_token_s = time.perf_counter() - t
    reply = engine.generate([ids], replace(greedy, max_tokens=new_tokens))[0]
    return {"kind": kind, "load_s": load_s, "load_first_token_s": load_s + first_token_s,
            "loadavg": os.getloadavg()[0], "rss_before_mb": before, "load_peak_mb": load_peak,
            "peak_mb": peak_rss_mb(), "reply_ids": reply, "reply": tok.decode(reply, skip_special_tokens=True).strip()}


def make_engine(model, max_len: int, eos_token_ids=()):
    """qrt's engine (the one `qrt generate`, `qrt serve` and `qrt.LLM` run on) for one sequence."""
    from qrt.engine.llm_engine import LLMEngine
    from qrt.engine.scheduler import SchedulerConfig
    page = 16
    return LLMEngine(model, SchedulerConfig(num_blocks=-(-max_len // page), page_size=page, max_num_seqs=1,
                                            max_model_len=max_len), eos_token_ids=eos_token_ids)


def decode_rates(fp_path: str, q_path: str, steps: int = 32, rounds: int = 5) -> dict:
    """Child process: both models side by side on qrt's engine, decode steps (one token each,
    paged KV cache) timed in alternating rounds so load from other jobs hits both alike; median tok/s."""
    import statistics

    import torch
    from transformers import AutoModelForCausalLM

    from qrt import load_quantized
    from qrt.serve.sampling import SamplingParams
    models = {"fp32": AutoModelForCausalLM.from_pretrained(fp_path, dtype=torch.float32).eval(),
              "qrt": load_quantized(q_path, device="cpu", progress=False)}
    prompt = list(range(1, 17))
    engines = {k: make_engine(m, len(prompt) + steps + 1) for k, m in models.items()}
    params = SamplingParams(temperature=0, max_tokens=steps + 1, ignore_eos=True)
    rates = {k: [] for k in models}
    with torch.inference_mode():
        for r in range(rounds + 1):  # the first round warms up (one-time kernel setup)
            for kind, engine in engines.items():
                engine.add_request(f"r{r}", prompt, params)
                engine.step()  # prefill + the first token
                t = time.perf_counter()
                n = 0
                while engine.has_unfinished():
                    n += len(engine.step())
                rates[kind].append(n / (time.perf_counter() - t))
    return {k: statistics.median(v[1:]) for k, v in rates.items()} | {"loadavg": os.getloadavg()[0]}


def child(kind: str, path: str, new_tokens: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, path, "--new-tokens", str(new_tokens),
                          "--threads", str(threads)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def quantize_and_save(scheme: str, out: str, quantize_embedding: bool = False):
    from qrt import quantize_model, save_quantized
    from qrt.hub.embedded import smollm2_dir
    from qrt.hub.load import load_fp_model
    model, tok = load_fp_model(smollm2_dir())
    quantize_model(model, scheme, quantize_embedding=quantize_embedding)
    return save_quantized(model, out, tokenizer=tok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="w4a16")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None, help="checkpoint dir (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: per-core numbers, stable on a shared machine; "
                         "0: torch's default)")
    ap.add_argument("--reuse", action="store_true", help="use the checkpoint already in --out")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, path = args.child
        result = decode_rates(*path.split("::"), steps=args.new_tokens) if kind == "decode" \
            else measure(kind, path, args.new_tokens)
        print(json.dumps(result))
        return
    from qrt.checkpoint.info import checkpoint_info
    from qrt.hub.embedded import smollm2_dir
    fp_dir = smollm2_dir()
    out = args.out or os.path.join(tempfile.mkdtemp(prefix="qrt-demo-"), f"smollm2-{args.scheme}")
    print(f"[1/3] quantizing SmolLM2-135M-Instruct to {args.scheme} -> {out}", flush=True)
    if args.reuse and os.path.isfile(os.path.join(out, "config.json")):
        saved = argparse.Namespace(total_bytes=checkpoint_info(out).file_bytes)
    else:
        saved = quantize_and_save(args.scheme, out)
        print(saved.summary())
    print("[2/3] loading and generating, each model in its own process", flush=True)
    fp, q = child("fp32", str(fp_dir), args.new_tokens, args.threads), child("qrt", out, args.new_tokens, args.threads)
    rates = child("decode", f"{fp_dir}::{out}", args.new_tokens, args.threads)
    fp["decode_tok_s"], q["decode_tok_s"] = rates["fp32"], rates["qrt"]
    fp16_bytes, fp32_bytes = checkpoint_info(out).fp16_bytes, checkpoint_info(fp_dir).file_bytes
    print(f"\nprompt: {PROMPT}\nfp32 reply:  {fp['reply']}\n{args.scheme} reply: {q['reply']}\n")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, no GPU used; 1-min load average "
          f"{fp['loadavg']:.1f} / {q['loadavg']:.1f} / {rates['loadavg']:.1f} (other jobs) during the fp32 / "
          f"{args.scheme} / decode runs")
    rows = [("checkpoint size (MB)", fp32_bytes / 1e6, saved.total_bytes / 1e6),
            ("  vs fp16 checkpoint", fp32_bytes / fp16_bytes, saved.total_bytes / fp16_bytes),
            ("load time (s)", fp["load_s"], q["load_s"]),
            ("load + first token (s)", fp["load_first_token_s"], q["load_first_token_s"]),
            ("peak RSS after load (MB)", fp["load_peak_mb"], q["load_peak_mb"]),
            ("  growth during load (MB)", fp["load_peak_mb"] - fp["rss_before_mb"],
             q["load_peak_mb"] - q["rss_before_mb"]),
            ("peak RSS incl. generate (MB)", fp["peak_mb"], q["peak_mb"]),
            ("decode tok/s on qrt's engine (median)", fp["decode_tok_s"], q["decode_tok_s"])]
    print(f"{'':40} {'fp32':>10} {args.scheme:>10} {'ratio':>7}")
    for name, a, b in rows:
        print(f"{name:40} {a:>10.3f} {b:>10.3f} {b / a:>6.2f}x")
    cfg = json.loads((fp_dir / "config.json").read_text())
    budget = 1.5 * (saved.total_bytes + 4 * cfg["vocab_size"] * cfg["hidden_size"]) / 2**20
    print(f"load RSS growth {q['load_peak_mb'] - q['rss_before_mb']:.0f} MB vs target 1.5 x (checkpoint + "
          f"fp32 embedding) = {budget:.0f} MB; load takes {q['load_s'] / fp['load_s']:.2f}x the time of fp32 "
          f"from_pretrained; decode {q['decode_tok_s'] / fp['decode_tok_s']:.2f}x fp32")
    print(f"[3/3] same greedy tokens as fp32: {fp['reply_ids'] == q['reply_ids']}")


if __name__ == "__main__":
    main()
