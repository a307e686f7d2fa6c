"""`qrt generate [MODEL_OR_DIR] "prompt"`: generate a reply, tokens streamed to the terminal.
The model is loaded with qrt.hub.load_model (quantized checkpoints, AutoGPTQ/AutoAWQ
directories, unquantized models); the chat template is applied when the tokenizer has one.
Architectures qrt's engine implements (qrt.engine.models.SUPPORTED_MODEL_TYPES) decode on it
(paged KV cache, the same path as `qrt serve` and `qrt.LLM`); any other model falls back to
transformers' `generate`, and says so on stderr."""
from __future__ import annotations

import sys
import threading
import time

from qrt.commands import add_device_dtype

ORDER = 20
WAIT_POLL_S = 0.25  # how often the wait for the reply checks that the engine is still alive


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt (streamed)", description=__doc__)
    p.add_argument("model", nargs="?", default="smollm2",
                   help="checkpoint dir, cached repo id, or 'smollm2' (default)")
    p.add_argument("prompt", help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (temperature > 0)")
    p.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    p.add_argument("--hf-generate", action="store_true",
                   help="decode with transformers' generate instead of qrt's engine")
    add_device_dtype(p)
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run)


def encode_prompt(tok, prompt: str, chat: bool = True):
    """input_ids [1, T]: the chat template with a generation prompt when there is one."""
    if chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        return ids
    return tok(prompt, return_tensors="pt").input_ids


def run(args) -> int:
    from qrt.engine.models import UnsupportedModelError, check_supported
    from qrt.hub.load import load_model, require_tokenizer
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: expected an int >= 1, found {args.max_new_tokens}")
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                            progress=True)
    require_tokenizer(tok, args.model, "generate needs the model's tokenizer")
    ids = encode_prompt(tok, args.prompt, chat=not args.no_chat_template)
    if not args.hf_generate:
        try:
            check_supported(model)
        except UnsupportedModelError as e:
            print(f"[{e}; decoding with transformers' generate instead]", file=sys.stderr)
        else:
            return engine_generate(model, tok, ids[0].tolist(), args)
    return hf_generate(model, tok, ids, args)


def engine_generate(model, tok, prompt_ids: list[int], args) -> int:
    """One request on qrt's serving engine; text is printed as the engine releases it (held
    back only while it could still be an incomplete UTF-8 character)."""
    import math

    from qrt.serve.config import EngineConfig
    from qrt.serve.engine import Engine, EngineDeadError
    from qrt.serve.sampling import SamplingParams
    ctx = min(getattr(model.config, "max_position_embeddings", None) or 2048, len(prompt_ids) + args.max_new_tokens)
    config = EngineConfig(max_model_len=ctx, max_num_seqs=1, max_waiting=0, batch_invariant=False,
                          num_blocks=math.ceil(ctx / EngineConfig.page_size))
    params = SamplingParams(max_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    engine = Engine(model, tok, config)
    engine.check_prompt(prompt_ids, params)  # a prompt longer than the model's context: a clear error
    done, final, shown = threading.Event(), [], [0]

    def sink(out) -> None:
        text = out.outputs[0].text
        sys.stdout.write(text[shown[0]:])
        sys.stdout.flush()
        shown[0] = len(text)
        if out.finished:
            final.append(out)
            done.set()

    t0 = time.perf_counter()
    engine.start()
    try:
        engine.add_request(prompt_ids, params, sink)
        while not done.wait(WAIT_POLL_S):
            if engine.is_dead():
                raise EngineDeadError(f"the engine stopped before the reply finished: {engine.health()}")
    finally:
        engine.stop()
    out = final[0]
    print()
    if out.outputs[0].finish_reason == "error":
        raise RuntimeError(f"generation failed: {out.error}")
    print(f"[{out.num_generated} tokens in {time.perf_counter() - t0:.2f} s, qrt engine]", file=sys.stderr)
    return 0


def hf_generate(model, tok, ids, args) -> int:
    import torch
    from transformers import TextStreamer
    ids = ids.to(next(model.parameters()).device)
    sample = args.temperature > 0
    if sample and args.seed is not None:
        torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                             do_sample=sample, temperature=args.temperature if sample else None,
                             top_p=None, top_k=None, streamer=TextStreamer(tok, skip_prompt=True,
                                                                          skip_special_tokens=True),
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    n = out.shape[1] - ids.shape[1]
    print(f"[{n} tokens in {time.perf_counter() - t0:.2f} s, transformers generate]", file=sys.stderr)
    return 0
