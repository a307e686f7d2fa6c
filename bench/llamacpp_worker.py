"""llama.cpp side of bench/decode_vs_llamacpp.py, run by the isolated venv's python
(.venv-llamacpp, scripts/setup.sh --llamacpp): never imported by qrt.

Reads one JSON request a line on stdin, answers one JSON line on stdout:
  {"op": "load", "name": "Q4_1", "path": ..., "threads": 1}        -> {"ok": true, "n_vocab": ...}
  {"op": "f16", "src": ..., "dst": ...}  writes an F16 GGUF from src through llama.cpp's own
                                         quantizer (llama_model_quantize, ftype MOSTLY_F16,
                                         allow_requantize: every tensor dequantized, then F16)
  {"op": "decode", "name": "Q4_1", "prompt": [ids], "tokens": N}    -> {"seconds": t, "ids": [...]}
     greedy (top_k 1), the KV cache reset first, so prefill is inside t like on qrt's side
  {"op": "quit"}
"""
from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import llama_cpp
    models = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # llama.cpp's own prints must not reach the protocol stream
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                break
            if op == "load":
                llm = llama_cpp.Llama(model_path=req["path"], n_ctx=512, n_threads=req.get("threads", 1),
                                      n_threads_batch=req.get("threads", 1), n_batch=512, verbose=False)
                models[req["name"]] = llm
                resp = {"ok": True, "n_vocab": llm.n_vocab(), "version": llama_cpp.__version__}
            elif op == "f16":
                params = llama_cpp.llama_model_quantize_default_params()
                params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_F16
                params.allow_requantize = True
                params.nthread = 1
                rc = llama_cpp.llama_model_quantize(req["src"].encode(), req["dst"].encode(), params)
                resp = {"ok": rc == 0, "rc": rc}
            elif op == "decode":
                llm = models[req["name"]]
                n, ids = req["tokens"], []
                llm.reset()
                t0 = time.perf_counter()
                for tok in llm.generate(req["prompt"], top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
                    ids.append(tok)
                    if len(ids) == n:
                        break
                resp = {"seconds": time.perf_counter() - t0, "ids": ids}
            else:
                resp = {"error": f"unknown op {op!r}"}
        except Exception as e:  # reported to the parent, which fails loudly
            resp = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(resp) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
