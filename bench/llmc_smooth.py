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
  Either method with quantization keys ("bits", "symmetric", "groups": {group size or
      "channel": [layer names]}, "ignore") may add "rounding": "gptq" (GPTQModifier with
      "actorder", "block_size", "percdamp" in place of QuantizationModifier) and
      "input_activations": true (dynamic per-token int8 activations: W8A8); OUT is then the
      checkpoint directory. OUT + ".time.json" gets the oneshot wall seconds.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.utils.data import DataLoader


def config_groups(spec: dict) -> dict:
    groups = {}
    for i, (gs, names) in enumerate(sorted(spec["groups"].items())):
        channel = gs == "channel"
        groups[f"group_{i}"] = {"targets": names, "weights": {
            "num_bits": spec["bits"], "type": "int", "symmetric": spec["symmetric"],
            "strategy": "channel" if channel else "group", "group_size": None if channel else int(gs),
            "observer": "minmax"}}
        if spec.get("input_activations"):
            groups[f"group_{i}"]["input_activations"] = {"num_bits": 8, "type": "int", "symmetric": True,
                                                         "strategy": "token", "dynamic": True, "observer": None}
    return groups


def quant_modifier(spec: dict):
    """Round to nearest (QuantizationModifier) or GPTQModifier for the spec's layer groups."""
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    if spec.get("rounding", "rtn") == "gptq":
        return GPTQModifier(config_groups=config_groups(spec), ignore=spec["ignore"], actorder=spec.get("actorder"),
                            block_size=spec.get("block_size", 128), dampening_frac=spec.get("percdamp", 0.01))
    return QuantizationModifier(config_groups=config_groups(spec), ignore=spec["ignore"])


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
    import time
    from pathlib import Path

    from llmcompressor import oneshot
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    from transformers import AutoModelForCausalLM

    allow_cpu_only()
    spec = json.loads(open(args.spec).read())
    windows = torch.load(args.windows)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    samples = [{"input_ids": w[None], "attention_mask": torch.ones_like(w)[None]} for w in windows]
    quantized = "bits" in spec
    if spec["method"] == "smoothquant":
        recipe = [SmoothQuantModifier(smoothing_strength=spec["alpha"])]
    else:
        recipe = [AWQModifier(n_grid=spec["n_grid"], duo_scaling=spec["duo_scaling"])]
    if quantized:
        recipe.append(quant_modifier(spec))
    t0 = time.time()
    oneshot(model=model, dataset=DataLoader(samples, batch_size=None), recipe=recipe,
            num_calibration_samples=len(samples), max_seq_length=windows.shape[1], pipeline="sequential")
    Path(args.out + ".time.json").write_text(json.dumps({"seconds": time.time() - t0}))
    if not quantized:
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, args.out)
    else:
        model.save_pretrained(args.out, save_compressed=True)


if __name__ == "__main__":
    main()
