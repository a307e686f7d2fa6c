"""Checkpoints that llmcompressor writes load in qrt and compute what compressed-tensors'
own decompressed model computes (reference from make_llmcompressor_ckpt.py)."""
import pytest
import torch
from safetensors.torch import load_file

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

# Weight-only: every weight is bit-identical to compressed-tensors' (checked), so logits
# differ only by float32 summation order (K <= 256: ~1e-6 relative); 1e-4 of the logits'
# range is far above that and far below the quantization's own effect (checked too).
# W8A8: both sides also quantize activations per token to int8; a value whose x/scale
# lands within float32 noise of a .5 tie may round the other way, moving that activation
# by one step (1/127 of its token's absmax): allow 1e-2 of the range, still under a tenth
# of the quantization's own effect on these logits (asserted).
LOGITS_TOL_OF_RANGE = {"w8a8": 1e-2}


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
    want, fp = ref["logits"], ref["logits_fp"]
    span = float(want.max() - want.min())
    err, quant_effect = (got - want).abs().max(), (want - fp).abs().max()
    assert err <= LOGITS_TOL_OF_RANGE.get(scheme, 1e-4) * span, (float(err), span)
    assert err < 0.1 * quant_effect, (float(err), float(quant_effect))
