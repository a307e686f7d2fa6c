"""Activation side of W8A8's loss: SmolLM2 fp32 with only the *inputs* of chosen Linear
groups quantized per token (int8 or FP8 e4m3, with the runtime twins' math,
qrt_kernels/reference.py quant_rows_ref / fp8_quant_rows_ref) and dequantized; the weights stay
fp32. Perplexity on the quality table's protocol (WikiText-2 test, first N windows of 2048),
so W8A8's loss splits into what the activations alone cost and what the weights add.

  python bench/act_sensitivity.py --act int8,fp8 --groups all,qkv,o,gate_up,down --windows 8 --threads 1

Writes bench/results/<date>-act-sensitivity.json (every row, the fp32 row, the hardware).
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from machine import machine_info
from quality_table import eval_ids, load_fp32
from qrt_kernels.reference import fp8_quant_rows_ref, quant_rows_ref

ROOT = Path(__file__).resolve().parent

GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "gate_up": ("gate_proj", "up_proj"),
          "down": ("down_proj",)}
GROUPS["all"] = tuple(n for g in GROUPS.values() for n in g)


def fake_quant_rows(x: torch.Tensor, act: str) -> torch.Tensor:
    """x [..., K] -> per-token quantized and dequantized, in x.dtype."""
    x2 = x.reshape(-1, x.shape[-1])
    if act == "int8":
        q, scale, _ = quant_rows_ref(x2, symmetric=True, static_scale=None)
    elif act == "fp8":
        q, scale = fp8_quant_rows_ref(x2)
    else:
        raise ValueError(f"act: expected 'int8' or 'fp8', found {act!r}")
    return (q.float() * scale.float()[:, None]).to(x.dtype).reshape(x.shape)


def hook_inputs(model, group: str, act: str) -> list:
    """Forward pre-hooks quantizing the inputs of every Linear named in GROUPS[group]."""
    if group not in GROUPS:
        raise ValueError(f"group: expected one of {tuple(GROUPS)}, found {group!r}")
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in GROUPS[group]:
            handles.append(mod.register_forward_pre_hook(
                lambda m, args: (fake_quant_rows(args[0], act), *args[1:])))
    if not handles:
        raise ValueError(f"no Linear of group {group!r} ({GROUPS[group]}) in the model")
    return handles


def main() -> None:
    from qrt.eval.ppl import perplexity
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--act", default="int8,fp8", help="comma-separated: int8, fp8")
    ap.add_argument("--groups", default="all,qkv,o,gate_up,down", help=f"comma-separated of {tuple(GROUPS)}")
    ap.add_argument("--windows", type=int, default=8, help="first N windows of the test text")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/<date>-act-sensitivity.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, _ = load_fp32()
    ids = eval_ids(tok, "wikitext")
    fp = perplexity(model, ids, max_windows=args.windows).ppl
    rows = []
    for act in args.act.split(","):
        for group in args.groups.split(","):
            handles = hook_inputs(model, group, act)
            t0 = time.time()
            try:
                ppl = perplexity(model, ids, max_windows=args.windows).ppl
            finally:
                for h in handles:
                    h.remove()
            rows.append(dict(act=act, group=group, linears=list(GROUPS[group]), ppl=ppl,
                             vs_fp32=ppl / fp - 1, seconds=time.time() - t0))
            print(f"{act:5s} {group:8s} ppl {ppl:.3f}  {100 * (ppl / fp - 1):+.2f}%", flush=True)
    out = Path(args.out or ROOT / "results" / f"{datetime.date.today()}-act-sensitivity.json")
    out.write_text(json.dumps(dict(model="SmolLM2-135M-Instruct fp32", text="WikiText-2 test", windows=args.windows,
                                   fp32_ppl=fp, machine=machine_info(torch.device("cpu")), rows=rows), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
