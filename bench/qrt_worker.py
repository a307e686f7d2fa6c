"""qrt side of bench/decode_vs_llamacpp.py: the same JSON-lines protocol as
bench/llamacpp_worker.py, so both run as subprocesses and a round alternates between them
(a second qrt worker with PYTHONPATH on an older checkout gives the before/after columns).

  {"op": "load", "name": "w4a16", "scheme": "w4a16" | "fp32", "dtype": "float32" | "bfloat16", "threads": 1}
  {"op": "decode", "name": ..., "prompt": [ids], "tokens": N}  -> {"seconds": t, "ids": [...]}
  {"op": "quit"}
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def build(scheme: str, dtype: str):
    """SmolLM2 (the dequantized Q4_1 GGUF, fp32) in dtype, RTN-quantized unless scheme == fp32,
    behind qrt's engine."""
    import torch

    import qrt
    from qrt.engine.llm_engine import LLMEngine
    from qrt.engine.scheduler import SchedulerConfig
    from qrt.hub import load_fp_model
    from qrt.hub.embedded import smollm2_dir
    model, _ = load_fp_model(smollm2_dir(), dtype=torch.float32)
    model.to(getattr(torch, dtype))
    if scheme != "fp32":
        qrt.quantize_model(model, scheme, progress=False)
    # lm_head "auto": quantized models decode their fp32 head from an int8 copy (qrt.runtime.lm_head);
    # an older checkout (--before) has no such option
    import inspect
    kw = {"lm_head": "auto"} if "lm_head" in inspect.signature(LLMEngine).parameters else {}
    return LLMEngine(model, SchedulerConfig(num_blocks=32, page_size=16, max_model_len=512), eos_token_ids=[], **kw)


def main() -> None:
    import torch

    from qrt import SamplingParams
    engines = {}
    out = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "quit":
                break
            if req["op"] == "load":
                torch.set_num_threads(req.get("threads", 1))
                engines[req["name"]] = build(req["scheme"], req["dtype"])
                head = getattr(engines[req["name"]].runner.model, "head_mode", "model")
                resp = {"ok": True, "torch_threads": torch.get_num_threads(), "lm_head": head,
                        "qrt": str(Path(sys.modules["qrt"].__file__).parent)}
            elif req["op"] == "decode":
                eng = engines[req["name"]]
                params = SamplingParams(temperature=0, max_tokens=req["tokens"], ignore_eos=True)
                t0 = time.perf_counter()
                ids = eng.generate([req["prompt"]], params)[0]
                resp = {"seconds": time.perf_counter() - t0, "ids": ids}
            else:
                resp = {"error": f"unknown op {req['op']!r}"}
        except Exception as e:
            resp = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(resp) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
