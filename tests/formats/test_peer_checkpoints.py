"""End to end: GPTQ and AWQ checkpoint directories of tiny random Llama / Qwen2 (q/k/v
bias) models load through
qrt.load_quantized, every quantized layer equal to the float64 oracle, logits equal to the
oracle-weight float32 model's."""
import pytest
import torch
from peer_checkpoints import dequantize_in_place, write_awq_checkpoint, write_gptq_checkpoint

import qrt
from qrt.runtime.linear import QuantLinear

# Reading: the loaded model with its QuantLinears swapped for their dequantized weights has
# bit-identical weights (checked), so its logits differ from the reference only by float32
# summation order (dot products of <= 128 terms: ~1e-6 relative). 1e-4 of the logits'
# range is far above that and far below one quantization step of one weight (scales here
# are 1e-3..2e-2, moving logits by ~1e-3 of their range or more).
READ_TOL_OF_RANGE = 1e-4
# The real forward: the CPU packed kernels round x, scales and y to bfloat16 (2^-8
# relative): up to ~1e-2 of the range on tiny models; a swapped, transposed or misread
# layer moves logits by O(range).
KERNEL_TOL_OF_RANGE = 3e-2


def _check_loaded(path, ref, seed):
    model = qrt.load_quantized(path, dtype=torch.float32)
    n_quant = 0
    for name, mod in ref.named_modules():
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            got = model.get_submodule(name)
            assert isinstance(got, QuantLinear), name
            assert torch.equal(got.dequantize_weight(torch.float32), mod.weight), name
            n_quant += 1
    assert n_quant == 14  # 7 Linear per Llama / Qwen2 layer
    ids = torch.randint(0, ref.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want, got = ref(ids).logits, model(ids).logits
        read = dequantize_in_place(model)(ids).logits
    span = float(want.max() - want.min())
    assert (read - want).abs().max() <= READ_TOL_OF_RANGE * span
    assert (got - want).abs().max() <= KERNEL_TOL_OF_RANGE * span
    return model


@pytest.mark.parametrize("family,bits,fmt,sym,desc_act", [
    ("llama", 4, "gptq", True, False),     # the common AutoGPTQ export
    ("qwen2", 4, "gptq_v2", False, True),  # GPTQModel v2, act-order g_idx, biases
    ("llama", 8, "gptq", False, False),
    ("llama", 3, "gptq_v2", True, True)])
def test_gptq_checkpoint_loads(family, bits, fmt, sym, desc_act, tmp_path, rng_seed):
    ref = write_gptq_checkpoint(tmp_path / "gptq", family, rng_seed, bits, 32, sym, desc_act, fmt)
    schemes = {n: m.scheme for n, m in qrt.load_quantized(tmp_path / "gptq").named_modules()
               if isinstance(m, QuantLinear)}
    assert {(s.symmetric, s.actorder) for s in schemes.values()} == {(sym, "group" if desc_act else None)}
    _check_loaded(tmp_path / "gptq", ref, rng_seed)


def test_autogptq_own_layout_loads(tmp_path, rng_seed):
    """AutoGPTQ's save_quantized: quantize_config.json, gptq_model-4bit-32g.safetensors."""
    ref = write_gptq_checkpoint(tmp_path / "autogptq", "llama", rng_seed, 4, 32, True, True, "gptq",
                                autogptq_layout=True)
    assert not (tmp_path / "autogptq" / "model.safetensors").exists()
    _check_loaded(tmp_path / "autogptq", ref, rng_seed)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_awq_checkpoint_loads(family, tmp_path, rng_seed):
    ref = write_awq_checkpoint(tmp_path / "awq", family, rng_seed, 32)
    _check_loaded(tmp_path / "awq", ref, rng_seed)


def test_act_order_gptq_round_trips_through_save_quantized(tmp_path, rng_seed):
    """desc_act g_idx survives conversion to compressed-tensors (actorder "group",
    weight_g_idx) and reads back exactly."""
    import json
    write_gptq_checkpoint(tmp_path / "gptq", "llama", rng_seed, 4, 32, False, True, "gptq_v2")
    model = qrt.load_quantized(tmp_path / "gptq", dtype=torch.float16)
    qrt.save_quantized(model, tmp_path / "ct")
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert [g["weights"]["actorder"] for g in qc["config_groups"].values()] == ["group"]
    back = qrt.load_quantized(tmp_path / "ct", dtype=torch.float16)
    for name, layer in model.named_modules():
        if isinstance(layer, QuantLinear):
            assert torch.equal(back.get_submodule(name).weight_g_idx, layer.weight_g_idx), name
            assert torch.equal(back.get_submodule(name).dequantize_weight(), layer.dequantize_weight()), name
