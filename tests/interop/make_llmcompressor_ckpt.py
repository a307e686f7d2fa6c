"""Write compressed-tensors checkpoints with llmcompressor, plus compressed-tensors' own
reading of them, for qrt's interop tests.

Runs in an environment with llmcompressor installed (its own pins of transformers and
compressed-tensors differ from qrt's, hence a separate venv and a subprocess), never
imports qrt:

    $QRT_LLMCOMPRESSOR_PYTHON tests/interop/make_llmcompressor_ckpt.py OUT_DIR [SCHEME ...] [--seed N]

For each scheme, OUT_DIR/<scheme>/ is the checkpoint llmcompressor saves
(save_compressed=True) of one tiny random Llama (float32, from --seed, identical across
schemes; RTN through QuantizationModifier, GPTQ with 16 random calibration sequences
through GPTQModifier; NVFP4 (W4A4) RTN with the same sequences to calibrate the
activations' input_global_scale), and OUT_DIR/<scheme>.reference.safetensors holds what compressed-tensors makes
of it: transformers' from_pretrained with CompressedTensorsConfig(dequantize=True)
decompresses every layer; we store
  input_ids                  int64 [2, 16]    token ids drawn from --seed
  logits                     float32 [2, 16, vocab] of the decompressed model
  logits_fp                  float32 [2, 16, vocab] of the unquantized model
  weight.<module name>       the decompressed weight of every quantized Linear
and for W4A4 schemes (NVFP4 activations; compressed-tensors fake-quantizes the input of
every quantized Linear in its forward, from the stored input_global_scale):
  logits_a16                 float32 [2, 16, vocab] of the same model, activation quantization off
whose weights (and so `logits` and `weight.*`) are the exact float32 dequantization, made by
compressed-tensors' own unpack_fp4_from_uint8 and dequantize: its decompressor rounds FP4
weights to bfloat16, which W4A4's activation rounding would amplify past any useful bound.
OUT_DIR/fp/ is the unquantized model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SCHEMES = {
    # name: (modifier class, preset scheme, extra modifier kwargs)
    "w4a16": ("QuantizationModifier", "W4A16", {}),
    "w4a16-asym": ("QuantizationModifier", "W4A16_ASYM", {}),
    "w4a16-gptq-actorder": ("GPTQModifier", "W4A16", {"actorder": "weight"}),
    "w8a16": ("QuantizationModifier", "W8A16", {}),
    "w8a8": ("QuantizationModifier", "W8A8", {}),
    "fp8-dynamic": ("QuantizationModifier", "FP8_DYNAMIC", {}),
    "nvfp4a16": ("QuantizationModifier", "NVFP4A16", {}),
    # W4A4: NVFP4 weights and activations; the activations' input_global_scale is calibrated
    "nvfp4": ("QuantizationModifier", "NVFP4", {}),
}
CALIBRATED = {"nvfp4"}  # RTN schemes whose activation qparams need calibration data (as GPTQ does)
W4A4 = {"nvfp4"}  # reference in float32 weights, with logits_a16


def tiny_llama_config():
    from transformers import LlamaConfig

    # in_features 128 and 256: multiples of llmcompressor's default group size 128
    return LlamaConfig(vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tiny_tokenizer(vocab: int):
    """A word-level tokenizer over tokens t0..t{vocab-1}: llmcompressor's calibration
    pipeline wants a processor even for pre-tokenized data."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t0",
                                   bos_token="t1", eos_token="t2")


def make_fp_model(out: Path, seed: int) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config()).to(torch.float32)
    with torch.no_grad():  # HF init (std 0.02) makes near-uniform logits; widen them
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.08)
    path = out / "fp"
    model.save_pretrained(path)
    tiny_tokenizer(model.config.vocab_size).save_pretrained(path)
    return path


def calibration_dataset(vocab: int, seed: int):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(3, vocab, (16, 32), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})


def quantize(fp_path: Path, name: str, out: Path, seed: int) -> Path:
    import llmcompressor.modifiers.quantization as mods
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cls_name, preset, extra = SCHEMES[name]
    modifier = getattr(mods, cls_name)(targets="Linear", scheme=preset, ignore=["lm_head"], **extra)
    model = AutoModelForCausalLM.from_pretrained(fp_path, dtype=torch.float32)
    kwargs = {}
    if cls_name == "GPTQModifier" or name in CALIBRATED:
        kwargs = dict(processor=AutoTokenizer.from_pretrained(fp_path), num_calibration_samples=16,
                      dataset=calibration_dataset(model.config.vocab_size, seed), max_seq_length=32)
    oneshot(model=model, recipe=[modifier], **kwargs)
    path = out / name
    model.save_pretrained(path, save_compressed=True)
    return path


def exact_fp4_weights(model, ckpt: Path) -> None:
    """Every NVFP4 Linear's weight redone in float32 by compressed-tensors' functions (its
    decompressor unpacks to bfloat16 and rounds the product to it): e2m1 * scale / global."""
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        tensors.update(load_file(f))
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None or f"{name}.weight_packed" not in tensors:
            continue
        packed = tensors[f"{name}.weight_packed"]
        q = unpack_fp4_from_uint8(packed, packed.shape[0], 2 * packed.shape[1], dtype=torch.float32)
        module.weight.data = dequantize(q, tensors[f"{name}.weight_scale"].float(), args=scheme.weights,
                                        global_scale=tensors[f"{name}.weight_global_scale"], dtype=torch.float32)


def reference_outputs(fp_path: Path, ckpt: Path, input_ids: torch.Tensor, w4a4: bool = False
                      ) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(
        ckpt, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True))
    fp = AutoModelForCausalLM.from_pretrained(fp_path, dtype=torch.float32)
    for module in model.modules():  # compressed-tensors' FP4 decompressor hands back bfloat16
        w = getattr(module, "weight", None)  # weights: widen them (exactly) for the fp32 forward
        if getattr(module, "quantization_scheme", None) is not None and w is not None and w.dtype != torch.float32:
            module.weight.data = w.data.float()
    if w4a4:
        exact_fp4_weights(model, ckpt)
    ref = {"input_ids": input_ids}
    with torch.no_grad():
        ref["logits"] = model(input_ids).logits.float()
        ref["logits_fp"] = fp(input_ids).logits.float()
        if w4a4:
            quantized = [m for m in model.modules() if getattr(m, "quantization_scheme", None) is not None]
            for m in quantized:  # compressed-tensors' switch for its forward's QDQ
                m.quantization_enabled = False
            ref["logits_a16"] = model(input_ids).logits.float()
            for m in quantized:
                m.quantization_enabled = True
    for mod_name, module in model.named_modules():
        if getattr(module, "quantization_scheme", None) is not None and hasattr(module, "weight"):
            ref[f"weight.{mod_name}"] = module.weight.detach().clone()
    return ref


def main(argv=None) -> int:
    from safetensors.torch import save_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("schemes", nargs="*", help=f"default: all of {list(SCHEMES)}")
    p.add_argument("--seed", type=int, default=0, help="model weights, calibration data and inputs")
    args = p.parse_args(argv)
    unknown = set(args.schemes) - set(SCHEMES)
    if unknown:
        p.error(f"unknown schemes {sorted(unknown)}; expected some of {list(SCHEMES)}")
    args.schemes = args.schemes or list(SCHEMES)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fp_path = make_fp_model(args.out_dir, args.seed)
    g = torch.Generator().manual_seed(args.seed + 2)
    input_ids = torch.randint(3, tiny_llama_config().vocab_size, (2, 16), generator=g)
    import compressed_tensors
    import llmcompressor
    import transformers

    versions = {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                "transformers": transformers.__version__, "torch": torch.__version__}
    for name in args.schemes:
        ckpt = quantize(fp_path, name, args.out_dir, args.seed)
        ref = reference_outputs(fp_path, ckpt, input_ids, w4a4=name in W4A4)
        save_file({k: v.contiguous() for k, v in ref.items()}, args.out_dir / f"{name}.reference.safetensors")
    (args.out_dir / "versions.json").write_text(json.dumps(dict(versions, seed=args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
