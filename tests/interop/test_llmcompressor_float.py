"""llmcompressor-written FP8_DYNAMIC and NVFP4A16 checkpoints (make_llmcompressor_ckpt.py)
load in qrt and compute what transformers + compressed-tensors compute on the same file.

Weights: FP8 equal compressed-tensors' decompressed ones exactly (fp32). compressed-tensors'
FP4 decompressor rounds its weights to bfloat16, so NVFP4 weights must equal ours rounded
to bfloat16 exactly (ours, kept in fp32, are the exact e2m1 * scale / global products).

Logits: NVFP4A16 with qrt's layers swapped for the same bf16-rounded weights must give the
reference up to float32 summation order; the real forward (fp32 weights) differs from it
by the reference's bf16 rounding only, far below the quantization's own effect.
FP8_DYNAMIC: the reference quantizes activations per token to FP8 (checked: it equals a
float64 simulation to 1e-5); qrt does the same in float32, so an activation within float
noise of an e4m3 rounding tie may round the other way and cascade (see
test_llmcompressor_ckpt.py for the int8 case): end to end, qrt must be far closer to the
reference than the activation quantization's own effect.
"""
import pytest
import torch
from safetensors.torch import load_file

import qrt
from qrt.runtime.linear import QuantLinear

READ_TOL_OF_RANGE = 1e-4  # fp32 summation order on K <= 256, as in test_llmcompressor_ckpt.py


def _load(ckpts, scheme):
    ref = load_file(ckpts / f"{scheme}.reference.safetensors")
    model = qrt.load_quantized(ckpts / scheme, dtype=torch.float32, progress=False)
    weights = {k[len("weight."):]: v for k, v in ref.items() if k.startswith("weight.")}
    assert len(weights) == 14
    return ref, model, weights


def _with_weights(model, weights, dtype):
    """The model with every QuantLinear replaced by an nn.Linear holding its weight rounded to dtype."""
    for name in weights:
        q = model.get_submodule(name)
        lin = torch.nn.Linear(q.in_features, q.out_features, bias=q.bias is not None)
        lin.weight.data = q.dequantize_weight(dtype).float()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, lin)
    return model


@pytest.mark.slow
def test_llmcompressor_nvfp4a16_matches_compressed_tensors(llmcompressor_ckpts):
    ref, model, weights = _load(llmcompressor_ckpts, "nvfp4a16")
    for name, w in weights.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, QuantLinear) and layer.scheme.is_float, name
        assert (layer.scheme.bits, layer.scheme.strategy, layer.scheme.group_size) == (4, "tensor_group", 16)
        assert torch.equal(layer.dequantize_weight(torch.bfloat16).float(), w), name
    want, fp = ref["logits"], ref["logits_fp"]
    span = float(want.max() - want.min())
    with torch.no_grad():
        got = model(ref["input_ids"]).logits
        read = _with_weights(model, weights, torch.bfloat16)(ref["input_ids"]).logits
    assert (read - want).abs().max() <= READ_TOL_OF_RANGE * span
    # bf16 rounding of the reference's weights (2^-9 relative) vs NVFP4's own error (~10%)
    assert (got - want).abs().max() < 0.05 * (want - fp).abs().max()


@pytest.mark.slow
def test_llmcompressor_fp8_dynamic_matches_compressed_tensors(llmcompressor_ckpts):
    ref, model, weights = _load(llmcompressor_ckpts, "fp8-dynamic")
    for name, w in weights.items():
        layer = model.get_submodule(name)
        s = layer.scheme
        assert s.is_float and (s.bits, s.strategy) == (8, "channel") and s.activations.type == "float", name
        assert torch.equal(layer.dequantize_weight(torch.float32), w), name
    with torch.no_grad():
        got = model(ref["input_ids"]).logits
        weight_only = _with_weights(model, weights, torch.float32)(ref["input_ids"]).logits
    want = ref["logits"]
    # measured: 4e-4 of the activation quantization's effect (seed 5; one tie flip); a cascade
    # of flips can reach ~0.2 of it (the int8 case over 8 seeds), so the bound is that test's
    err, a8_effect = (got - want).abs().mean(), (want - weight_only).abs().mean()
    assert err < 0.5 * a8_effect, (float(err), float(a8_effect))
