"""Checkpoints that llmcompressor writes load in qrt and compute what compressed-tensors'
own decompressed model computes (reference from make_llmcompressor_ckpt.py).

W8A8 logits are compared with compressed-tensors' decompressed weights run under vLLM's
dynamic per-token int8 activation quantization (scale = absmax / 127; csrc/quantization/
compressed_tensors/int8_quant_kernels.cu), which qrt implements, rather than with
compressed-tensors' own fake quantization: that uses absmax / 127.5, which puts every
token's largest element exactly on a rounding tie (+-127.5), so float rounding noise flips
it by one step in every token of every layer. Evaluating that simulation in float64
instead of float32 moves these logits by ~0.1 (1.5% of their range), more than any
tolerance worth having; it is also not what vLLM computes.
"""
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import qrt
from qrt.modules import QuantLinear

# scheme: (bits, strategy, group_size, symmetric, has int8 activations)
EXPECTED = {
    "w4a16": (4, "group", 128, True, False),
    "w4a16-asym": (4, "group", 128, False, False),
    "w4a16-gptq-actorder": (4, "group", 128, True, False),  # actorder "weight": no g_idx
    "w8a16": (8, "group", 128, True, False),  # llmcompressor 0.14's W8A16 preset is g128
    "w8a8": (8, "channel", None, True, True),
}

# Every weight is bit-identical to compressed-tensors' (checked), so logits differ only by
# float32 summation order (K <= 256: ~1e-6 relative) and, for W8A8, by an activation whose
# x * 127 / absmax lands within float32 noise (~1e-7) of a .5 tie and rounds the other
# way (~1e-7 chance per element, ~6e4 elements here). 1e-4 of the logits' range is far
# above both and far below the quantization's own effect (asserted: under a tenth of it).
LOGITS_TOL_OF_RANGE = 1e-4


def per_token_int8(x: torch.Tensor) -> torch.Tensor:
    """vLLM's dynamic per-token int8 activation quantization, in float64."""
    x64 = x.double()
    scale = x64.abs().amax(dim=-1, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (torch.round(x64 / scale).clamp(-128, 127) * scale).to(x.dtype)


def w8a8_reference_logits(ckpts, ref: dict) -> torch.Tensor:
    """The unquantized model with compressed-tensors' decompressed weights, every
    quantized Linear's input quantized per token the vLLM way."""
    model = AutoModelForCausalLM.from_pretrained(ckpts / "fp", dtype=torch.float32)
    for key, w in ref.items():
        if key.startswith("weight."):
            layer = model.get_submodule(key[len("weight."):])
            layer.weight.data.copy_(w)
            layer.register_forward_pre_hook(lambda mod, args: (per_token_int8(args[0]),))
    with torch.no_grad():
        return model(ref["input_ids"]).logits.float()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_llmcompressor_checkpoint_matches_compressed_tensors(scheme, llmcompressor_ckpts):
    ref = load_file(llmcompressor_ckpts / f"{scheme}.reference.safetensors")
    model = qrt.load_quantized(llmcompressor_ckpts / scheme, dtype=torch.float32)
    weights = {k[len("weight."):]: v for k, v in ref.items() if k.startswith("weight.")}
    assert len(weights) == 14  # every Linear but lm_head
    bits, strategy, group_size, symmetric, a8 = EXPECTED[scheme]
    for name, w in weights.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, QuantLinear), name
        s = layer.scheme
        assert (s.bits, s.strategy, s.group_size, s.symmetric, s.activations is not None) == \
            (bits, strategy, group_size, symmetric, a8), name
        assert torch.equal(layer.dequantize_weight(torch.float32), w), name
    assert not isinstance(model.get_submodule("lm_head"), QuantLinear)

    with torch.no_grad():
        got = model(ref["input_ids"]).logits.float()
    want = w8a8_reference_logits(llmcompressor_ckpts, ref) if a8 else ref["logits"]
    span = float(want.max() - want.min())
    err, quant_effect = (got - want).abs().max(), (want - ref["logits_fp"]).abs().max()
    assert err <= LOGITS_TOL_OF_RANGE * span, (float(err), span)
    assert err < 0.1 * quant_effect, (float(err), float(quant_effect))
