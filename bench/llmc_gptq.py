"""llmcompressor's GPTQ on the same model and calibration windows as qrt's, for the
side-by-side rows of bench/quality_table.py. Runs in a Python environment with
llmcompressor installed (`pip install llmcompressor`; it pins its own transformers, so use
a separate virtual environment), e.g.:

  /work/venvs/llmc/bin/python bench/llmc_gptq.py --model DIR --windows calib.pt \
      --spec spec.json --out weights.pt

calib.pt: int64 [nsamples, seqlen] token windows (qrt.data.windows). spec.json:
{"bits", "symmetric", "actorder", "block_size", "percdamp", "groups": {group_size or
"channel": [layer names]}, "ignore": [...]}. Writes {layer name: dequantized weight} of
every quantized Linear (what a compressed-tensors reader decodes) plus the wall time.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader


def config_groups(spec: dict) -> dict:
    groups = {}
    for i, (gs, names) in enumerate(sorted(spec["groups"].items())):
        strategy = "channel" if gs == "channel" else "group"
        groups[f"group_{i}"] = {
            "targets": names,
            "weights": {"num_bits": spec["bits"], "type": "int", "symmetric": spec["symmetric"],
                        "strategy": strategy, "group_size": None if gs == "channel" else int(gs),
                        "observer": "minmax"},
        }
    return groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--windows", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from transformers import AutoModelForCausalLM

    spec = json.loads(open(args.spec).read())
    windows = torch.load(args.windows)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    samples = [{"input_ids": w[None], "attention_mask": torch.ones_like(w)[None]} for w in windows]
    loader = DataLoader(samples, batch_size=None)
    recipe = GPTQModifier(config_groups=config_groups(spec), ignore=spec["ignore"],
                          actorder=spec["actorder"], block_size=spec["block_size"],
                          dampening_frac=spec["percdamp"])
    t0 = time.time()
    oneshot(model=model, dataset=loader, recipe=recipe, num_calibration_samples=len(samples),
            max_seq_length=windows.shape[1], pipeline="sequential")
    seconds = time.time() - t0
    names = [n for names in spec["groups"].values() for n in names]
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    torch.save({"weights": weights, "seconds": seconds}, args.out)
    print(f"llmcompressor GPTQ: {len(weights)} layers in {seconds:.0f} s")


if __name__ == "__main__":
    main()
