"""llmcompressor-written FP8_DYNAMIC, NVFP4A16 and NVFP4 (W4A4) checkpoints
(make_llmcompressor_ckpt.py) load in qrt and compute what transformers + compressed-tensors
compute on the same file.

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
NVFP4 W4A4: compressed-tensors' forward fake-quantizes every quantized Linear's input from
the stored input_global_scale; the reference's weights are compressed-tensors' own float32
dequantization (its decompressor's bf16 rounding would flip activation roundings). qrt
fake-quantizes the same way (qrt.numerics.fp, bit-equal to compressed-tensors) into the same
fp32 GEMM, so its logits equal the reference: measured max error 0.0 (seeds 1, 2, 3, 5; the
Triton backend, other fp32 sums: <= 1.4e-6 on logit ranges of 6.6-7.3), against 1.1-1.3
(mean 0.2) that the activation quantization itself moves them. The bound is the float32
summation-order one.
"""
import json

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


@pytest.mark.slow
def test_llmcompressor_nvfp4_w4a4_matches_compressed_tensors(llmcompressor_ckpts):
    ref, model, weights = _load(llmcompressor_ckpts, "nvfp4")
    stored = load_file(llmcompressor_ckpts / "nvfp4" / "model.safetensors")
    for name, w in weights.items():
        layer = model.get_submodule(name)
        assert layer.scheme.activations is not None and layer.scheme.activations.is_nvfp4, name
        assert torch.equal(layer.input_global_scale, stored[f"{name}.input_global_scale"]), name
        assert torch.equal(layer.dequantize_weight(torch.float32), w), name  # exact fp32 on both sides
    want, a16 = ref["logits"], ref["logits_a16"]
    span = float(want.max() - want.min())
    with torch.no_grad():
        got = model(ref["input_ids"]).logits
    assert (got - want).abs().max() <= READ_TOL_OF_RANGE * span, float((got - want).abs().max())
    # the reference does quantize activations, far past that bound (measured 0.15 of the range)
    assert (want - a16).abs().max() > 100 * READ_TOL_OF_RANGE * span


def _quant_args(section: dict, keys) -> dict:
    return {k: section.get(k) for k in keys}


@pytest.mark.slow
def test_llmcompressor_nvfp4_w4a4_resaved_by_qrt_is_the_same_file(llmcompressor_ckpts, tmp_path):
    """qrt re-saving the W4A4 model writes llmcompressor's tensors bit for bit and its config
    group (every key qrt writes has llmcompressor's value; qrt leaves out observer and the
    other keys only calibration reads), and loading that again computes the same logits."""
    src = llmcompressor_ckpts / "nvfp4"
    model = qrt.load_quantized(src, dtype=torch.float32, progress=False)
    qrt.save_quantized(model, tmp_path / "again", dtype=torch.float32)
    theirs, ours = load_file(src / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]), k
    cfg = lambda p: json.loads((p / "config.json").read_text())["quantization_config"]  # noqa: E731
    (g_theirs,), (g_ours,) = cfg(src)["config_groups"].values(), cfg(tmp_path / "again")["config_groups"].values()
    assert (g_ours["format"], g_ours["targets"]) == (g_theirs["format"], g_theirs["targets"])
    for section in ("weights", "input_activations"):
        assert g_ours[section] == _quant_args(g_theirs[section], g_ours[section]), section
    assert cfg(tmp_path / "again")["ignore"] == cfg(src)["ignore"]
    again = qrt.load_quantized(tmp_path / "again", dtype=torch.float32, progress=False)
    ids = load_file(llmcompressor_ckpts / "nvfp4.reference.safetensors")["input_ids"]
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
