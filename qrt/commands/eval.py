"""`qrt eval ppl MODEL_OR_DIR [--text FILE] [--max-windows N]`: perplexity the GPTQ-paper
way (qrt.eval.ppl), on the packaged WikiText-2 raw test split by default."""
from __future__ import annotations

import json

from qrt.commands import add_device_dtype

ORDER = 40


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate model quality")
    sub = p.add_subparsers(dest="eval_command", required=True)
    ppl = sub.add_parser("ppl", help="perplexity on WikiText-2 (raw test) or a text file",
                         description=__doc__)
    ppl.add_argument("model", help='"smollm2", a Hugging Face model directory / cached repo id, '
                                   "or a qrt (compressed-tensors) checkpoint directory")
    ppl.add_argument("--text", default=None,
                     help="text file (.gz ok); default: the packaged WikiText-2 raw test split")
    ppl.add_argument("--max-windows", type=int, default=None,
                     help="evaluate only the first N windows (default: all)")
    ppl.add_argument("--window", type=int, default=None,
                     help="tokens per window (default: min(2048, model context))")
    add_device_dtype(ppl)
    ppl.add_argument("--json", default=None, help="also write the result as JSON to this file")
    ppl.set_defaults(func=run_ppl)


def run_ppl(args) -> int:
    from qrt.eval.ppl import perplexity, tokenize_eval_text
    from qrt.hub.load import load_model, require_tokenizer

    if args.max_windows is not None and args.max_windows < 1:
        raise SystemExit(f"--max-windows: expected a positive integer, found {args.max_windows}")
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    require_tokenizer(tokenizer, args.model, "perplexity needs the model's tokenizer")
    ids = tokenize_eval_text(tokenizer, args.text)
    res = perplexity(model, ids, window=args.window, max_windows=args.max_windows)
    print(f"model: {describe(model, args.model)}")
    print(f"text: {args.text or 'WikiText-2 raw test (packaged)'}, {res.text_tokens} tokens; "
          f"{res.windows} windows x {res.window_len} tokens")
    print(f"perplexity: {res.ppl:.4f}  (mean NLL {res.nll:.5f} nats over {res.tokens} predicted tokens)")
    if args.json:
        d = res.to_dict()
        d.update(model=str(args.model), text=args.text)
        with open(args.json, "w") as f:
            json.dump(d, f, indent=1)
    return 0


def describe(model, name) -> str:
    """"NAME [quantized checkpoint (METHOD)]" or "NAME [floating-point model]"."""
    from qrt.hub.resolve import resolve_model_dir
    ckpt = getattr(model, "qrt_checkpoint", None)  # set by qrt.checkpoint.load
    if ckpt is None:
        return f"{resolve_model_dir(name)} [floating-point model]"
    return f"{ckpt['path']} [quantized checkpoint ({ckpt['quantization_config'].get('quant_method')})]"
