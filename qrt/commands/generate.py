"""`qrt generate [MODEL_OR_DIR] "prompt"`: generate a reply, tokens streamed to the terminal.
A quantized checkpoint is loaded with load_quantized, anything else with transformers; the
chat template is applied when the tokenizer has one."""
from __future__ import annotations

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt (streamed)", description=__doc__)
    p.add_argument("model", nargs="?", default="smollm2",
                   help="checkpoint dir, cached repo id, or 'smollm2' (default)")
    p.add_argument("prompt", help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run)


def load_for_generation(model, device=None, trust_remote_code=False):
    """(model, tokenizer): quantized checkpoints through load_quantized, others through
    transformers (fp32 on the CPU)."""
    import json

    import torch
    from transformers import AutoTokenizer

    from qrt.hub.load import load_quantized
    from qrt.hub.resolve import load_fp_model, resolve_model_dir
    root = resolve_model_dir(model)
    if "quantization_config" in json.loads((root / "config.json").read_text()):
        m = load_quantized(root, device=device, trust_remote_code=trust_remote_code)
        return m, AutoTokenizer.from_pretrained(root, trust_remote_code=trust_remote_code)
    m, tok = load_fp_model(root, dtype=torch.float32, trust_remote_code=trust_remote_code)
    return m.to(device or ("cuda" if torch.cuda.is_available() else "cpu")), tok


def encode_prompt(tok, prompt: str, chat: bool = True):
    """input_ids [1, T]: the chat template with a generation prompt when there is one."""
    if chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        return ids
    return tok(prompt, return_tensors="pt").input_ids


def run(args) -> int:
    import sys
    import time

    import torch
    from transformers import TextStreamer
    model, tok = load_for_generation(args.model, args.device, args.trust_remote_code)
    ids = encode_prompt(tok, args.prompt, chat=not args.no_chat_template).to(next(model.parameters()).device)
    sample = args.temperature > 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                             do_sample=sample, temperature=args.temperature if sample else None,
                             top_p=None, top_k=None, streamer=TextStreamer(tok, skip_prompt=True,
                                                                          skip_special_tokens=True),
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    n = out.shape[1] - ids.shape[1]
    print(f"[{n} tokens in {time.perf_counter() - t0:.2f} s]", file=sys.stderr)
    return 0
