"""`qrt serve MODEL_OR_DIR`: an OpenAI-compatible HTTP server with continuous batching."""
from __future__ import annotations

from qrt.commands import add_device_dtype

ORDER = 50


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching, paged KV cache)",
                              description=__doc__)
    p.add_argument("model", nargs="?", default="smollm2",
                   help="HF model dir, qrt quantized dir, cached repo id, or 'smollm2' (embedded; default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_device_dtype(p)
    p.add_argument("--quantize", default=None, metavar="SCHEME",
                   help="RTN-quantize an unquantized model on load, e.g. w4a16")
    p.add_argument("--served-model-name", default=None, help="id reported by /v1/models")
    p.add_argument("--max-model-len", type=int, default=None, help="prompt + output tokens per request")
    p.add_argument("--max-num-seqs", type=int, default=32, help="requests decoded together")
    p.add_argument("--max-waiting", type=int, default=64, help="queued requests beyond the running ones (then 429)")
    p.add_argument("--max-batch-tokens", type=int, default=512, help="tokens per forward (prefill chunk)")
    p.add_argument("--page-size", type=int, default=32, help="tokens per KV-cache block")
    p.add_argument("--kv-cache-mb", type=int, default=512, help="KV-cache budget in MiB")
    p.add_argument("--no-prefix-caching", dest="prefix_caching", action="store_false",
                   help="do not share KV blocks of common prompt prefixes (shared by default)")
    p.add_argument("--num-threads", type=int, default=None, help="torch threads of the generation loop")
    p.add_argument("--no-batch-invariant", dest="batch_invariant", action="store_false",
                   help="fp32 (torch) attention instead of the per-sequence float64 twin on the CPU")
    p.add_argument("--default-max-tokens", type=int, default=16, help="max_tokens when a request omits it")
    p.add_argument("--max-body-mb", type=float, default=4.0, help="largest request body in MiB (then 413)")
    p.add_argument("--max-prompt-chars", type=int, default=None,
                   help="longest prompt in characters, checked before tokenizing (default: 64 x max-model-len)")
    p.add_argument("--request-timeout", type=float, default=600.0,
                   help="seconds a request may take before it is aborted (then 408; 0: no deadline)")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to drain requests on SIGTERM")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args) -> int:
    from qrt.serve.config import EngineConfig, ServerConfig
    from qrt.serve.run import run_server
    config = EngineConfig(max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                          max_waiting=args.max_waiting, max_batch_tokens=args.max_batch_tokens,
                          page_size=args.page_size, kv_cache_mb=args.kv_cache_mb, prefix_caching=args.prefix_caching,
                          num_threads=args.num_threads, batch_invariant=args.batch_invariant)
    limits = ServerConfig(max_body_bytes=int(args.max_body_mb * 2**20), max_prompt_chars=args.max_prompt_chars,
                          request_timeout_s=args.request_timeout or None)
    return run_server(args.model, args.host, args.port, quantize=args.quantize, config=config, server_config=limits,
                      device=args.device, dtype=args.dtype,
                      served_model_name=args.served_model_name, default_max_tokens=args.default_max_tokens,
                      graceful_timeout=args.graceful_timeout, log_level=args.log_level)
