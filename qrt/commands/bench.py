"""`qrt bench serve`: load-test a running OpenAI-compatible server (vLLM benchmark_serving style)."""
from __future__ import annotations

import math

ORDER = 60


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="bench_command", required=True)
    s = sub.add_parser("serve", help="stream requests at a running server; report throughput, TTFT, TPOT, ITL, E2EL")
    s.add_argument("--base-url", default=None, help="server root, a loopback address (default http://HOST:PORT)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    s.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    s.add_argument("--num-prompts", type=int, default=100)
    s.add_argument("--request-rate", type=float, default=math.inf, help="requests/s; inf sends all at once")
    s.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of arrival gaps (1: Poisson)")
    s.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most")
    s.add_argument("--input-len", type=int, default=32, help="words per random prompt (~tokens)")
    s.add_argument("--output-len", type=int, default=16, help="max_tokens per request")
    s.add_argument("--dataset-path", default=None, help="prompts file: one per line, or jsonl with 'prompt'")
    s.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let requests stop at EOS (default: always output-len tokens)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-duration", type=float, default=600.0, help="seconds before unfinished requests fail")
    s.add_argument("--result-json", default=None, help="write the summary here")
    s.set_defaults(func=run_serve)


def run_serve(args) -> int:
    import asyncio
    import json
    from pathlib import Path

    from qrt.serve.bench_report import format_table, summarize
    from qrt.serve.loadgen import LoadSpec, run_load
    spec = LoadSpec(base_url=args.base_url or f"http://{args.host}:{args.port}", num_prompts=args.num_prompts,
                    request_rate=args.request_rate, burstiness=args.burstiness,
                    max_concurrency=args.max_concurrency, endpoint=args.endpoint, input_len=args.input_len,
                    output_len=args.output_len, dataset_path=args.dataset_path, model=args.model, seed=args.seed,
                    ignore_eos=args.ignore_eos, max_duration_s=args.max_duration)
    results, duration = asyncio.run(run_load(spec))
    summary = summarize(results, duration, spec)
    print(format_table(summary))
    if args.result_json:
        Path(args.result_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result_json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"wrote {args.result_json}")
    return 0 if summary["failed"] == 0 else 1
