"""Load run on the embedded SmolLM2 behind `qrt serve`, fp32 vs W4A16, on this machine.

For each variant a real server process is started on 127.0.0.1, then, in one run:
  serial      the N requests one at a time (max concurrency 1)
  concurrent  the same N requests all at once (max concurrency N)
  sustained   a long Poisson run at a rate the server keeps up with
The report gives output tokens/s of both, their ratio, whether every greedy output of
the concurrent run equals the serial one, and the sustained run's failures.

  PYTHONPATH=$PWD/.dev python bench/serve_load.py --out bench/results/serve_load_smollm2.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from qrt.serve.bench_report import format_table, summarize
from qrt.serve.loadgen import LoadSpec, run_load

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, quantize: str | None, threads: int, max_num_seqs: int, log: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "qrt", "serve", model, "--port", str(port), "--num-threads", str(threads),
           "--max-num-seqs", str(max_num_seqs), "--max-waiting", "256", "--log-level", "warning"]
    if quantize:
        cmd += ["--quantize", quantize]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / ".dev"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("server did not start in 600 s")


def load(base: str, **kw) -> tuple[dict, list[str]]:
    spec = LoadSpec(base_url=base, **kw)
    results, duration = asyncio.run(run_load(spec, progress=False))
    return summarize(results, duration, spec), [r.text for r in results]


def run_variant(name: str, args) -> dict:
    log = Path(args.log_dir) / f"serve_{name}.log"
    proc, base = start_server(args.model, None if name == "fp32" else name, args.threads, args.concurrency, log)
    try:
        load(base, num_prompts=2, input_len=8, output_len=4)  # warm-up (first forward allocates the cache)
        same = dict(num_prompts=args.concurrency, input_len=args.input_len, output_len=args.output_len, seed=1)
        serial, serial_texts = load(base, max_concurrency=1, **same)
        conc, conc_texts = load(base, max_concurrency=args.concurrency, **same)
        # 70% of the burst's request rate: conservative, since sustained requests generate fewer tokens
        rate = args.rate or round(0.7 * conc["request_throughput"], 2)
        sustained, _ = load(base, num_prompts=args.sustained_requests, request_rate=rate,
                            max_concurrency=args.concurrency, input_len=args.input_len,
                            output_len=args.sustained_output_len, seed=2, max_duration_s=args.max_duration)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    for title, s in (("serial", serial), (f"{args.concurrency} concurrent", conc), ("sustained", sustained)):
        print(format_table(s, f"{name} {title}"), flush=True)
    return {"variant": name, "serial": serial, "concurrent": conc, "sustained": sustained,
            "sustained_rate_req_s": rate,
            "concurrent_over_serial_output_tok_s": conc["output_throughput"] / serial["output_throughput"],
            "greedy_identical_batched_vs_alone": sum(a == b for a, b in zip(conc_texts, serial_texts)),
            "requests": args.concurrency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--variants", default="fp32,w4a16")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--sustained-requests", type=int, default=200)
    ap.add_argument("--sustained-output-len", type=int, default=16)
    ap.add_argument("--rate", type=float, default=None, help="sustained rate (default: 70%% of the measured)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-duration", type=float, default=1800)
    ap.add_argument("--log-dir", default="/tmp")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. the W4A16 CPU backend)")
    ap.add_argument("--out", default="bench/results/serve_load_smollm2.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from machine import machine_info
    rows = [run_variant(v, args) for v in args.variants.split(",")]
    out = {"machine": machine_info(torch.device("cpu")) | {"torch_threads": args.threads}, "model": args.model,
           "args": vars(args),
           "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    for r in rows:
        print(f"{r['variant']}: concurrent/serial output tok/s = {r['concurrent_over_serial_output_tok_s']:.2f}x, "
              f"greedy identical {r['greedy_identical_batched_vs_alone']}/{r['requests']}, "
              f"sustained {r['sustained']['completed']} ok / {r['sustained']['failed']} failed "
              f"at {r['sustained_rate_req_s']} req/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
