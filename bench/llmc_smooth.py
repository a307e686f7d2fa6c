"""llmcompressor's SmoothQuantModifier / AWQModifier on the same model and calibration
windows as qrt's, for tests/quantize/test_smoothing_llmcompressor.py. Runs in a Python
environment with llmcompressor (its own venv: it pins its own transformers), e.g.:

  .venv-llmc/bin/python bench/llmc_smooth.py --model DIR --windows calib.pt --spec spec.json --out OUT

calib.pt: int64 [nsamples, seqlen] token windows (qrt.data.windows). spec.json:
  {"method": "smoothquant", "alpha"}: SmoothQuantModifier alone (no quantization); OUT is
      a torch file {parameter name: tensor} of the smoothed fp model.
  {"method": "awq", "n_grid", "duo_scaling", "bits", "symmetric", "groups": {group size:
      [layer names]}, "ignore"}: AWQModifier + QuantizationModifier (round to nearest);
      OUT is the compressed-tensors checkpoint directory it saves.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.utils.data import DataLoader


def config_groups(spec: dict) -> dict:
    return {f"group_{i}": {"targets": names,
                           "weights": {"num_bits": spec["bits"], "type": "int", "symmetric": spec["symmetric"],
                                       "strategy": "group", "group_size": int(gs), "observer": "minmax"}}
            for i, (gs, names) in enumerate(sorted(spec["groups"].items()))}


def allow_cpu_only() -> None:
    """llmcompressor 0.14's AWQ pins its cached activations (IntermediatesCache.pin_memory)
    before the grid search, which raises "Cannot access accelerator device" on a host without
    one. Pinning only speeds up host-to-device copies, so there it becomes a no-op; the
    numerics are untouched. Checked against 0.14 only: any other version fails loudly."""
    if torch.accelerator.is_available():
        return
    import llmcompressor
    from llmcompressor.pipelines.cache import IntermediatesCache
    if not llmcompressor.__version__.startswith("0.14."):
        raise SystemExit(f"llmc_smooth.py: the CPU-only workaround is checked for llmcompressor 0.14, "
                         f"found {llmcompressor.__version__}; re-check IntermediatesCache.pin_memory")
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None


def main() -> None:
    ap = argparse.ArgumentParser()
    for a in ("--model", "--windows", "--spec", "--out"):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    from transformers import AutoModelForCausalLM

    allow_cpu_only()
    spec = json.loads(open(args.spec).read())
    windows = torch.load(args.windows)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    samples = [{"input_ids": w[None], "attention_mask": torch.ones_like(w)[None]} for w in windows]
    if spec["method"] == "smoothquant":
        recipe = [SmoothQuantModifier(smoothing_strength=spec["alpha"])]
    else:
        recipe = [AWQModifier(n_grid=spec["n_grid"], duo_scaling=spec["duo_scaling"]),
                  QuantizationModifier(config_groups=config_groups(spec), ignore=spec["ignore"])]
    oneshot(model=model, dataset=DataLoader(samples, batch_size=None), recipe=recipe,
            num_calibration_samples=len(samples), max_seq_length=windows.shape[1], pipeline="sequential")
    if spec["method"] == "smoothquant":
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, args.out)
    else:
        model.save_pretrained(args.out, save_compressed=True)


if __name__ == "__main__":
    main()
