"""`qrt eval ppl MODEL_OR_DIR [--text FILE] [--max-windows N]`: perplexity the GPTQ-paper
way (qrt.eval.ppl), on the packaged WikiText-2 raw test split by default."""
from __future__ import annotations

import json

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
    ppl.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    ppl.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16", "auto"],
                     help="compute dtype (default: float32 on CPU, the checkpoint's dtype on GPU)")
    ppl.add_argument("--json", default=None, help="also write the result as JSON to this file")
    ppl.set_defaults(func=run_ppl)


def run_ppl(args) -> int:
    from qrt.eval.models import load_for_eval
    from qrt.eval.ppl import perplexity, tokenize_eval_text

    if args.max_windows is not None and args.max_windows < 1:
        raise SystemExit(f"--max-windows: expected a positive integer, found {args.max_windows}")
    model, tokenizer, what = load_for_eval(args.model, args.device, args.dtype)
    ids = tokenize_eval_text(tokenizer, args.text)
    res = perplexity(model, ids, window=args.window, max_windows=args.max_windows)
    print(f"model: {what}")
    print(f"text: {args.text or 'WikiText-2 raw test (packaged)'}, {res.text_tokens} tokens; "
          f"{res.windows} windows x {res.window_len} tokens")
    print(f"perplexity: {res.ppl:.4f}  (mean NLL {res.nll:.5f} nats over {res.tokens} predicted tokens)")
    if args.json:
        d = res.to_dict()
        d.update(model=str(args.model), text=args.text)
        with open(args.json, "w") as f:
            json.dump(d, f, indent=1)
    return 0
