"""quantize_model -> save_quantized -> load_quantized across model families.

Oracles: (1) the in-memory quantized model (a loaded checkpoint must compute exactly the
same logits: same tensors, same code); (2) a float64 copy of the fp model whose quantized
layers carry their dequantized weights (checks the module swap and the forward, the
dequantized values themselves are checked against compressed-tensors elsewhere)."""
import copy

import pytest
import torch
from tiny_models import FAMILIES

from qrt import load_quantized, quantize_model, save_quantized
from qrt.runtime.embedding import QuantEmbedding
from qrt.runtime.linear import QuantLinear, use_backend


def fake_quant_float64(fp_model, qmodel):
    """fp_model in float64 with every quantized layer's weight set to qmodel's dequantized one."""
    ref = copy.deepcopy(fp_model).double()
    for name, m in qmodel.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            ref.get_submodule(name).weight.data = m.dequantize_weight(torch.float64)
    return ref


def assert_matches_reference(q, ref):
    """The CPU packed kernels (torch int4/int8 pack) compute in bf16, rounding x, scales and
    y at 2^-8 relative: measured <= 0.0093 of the logit range on these models (fp32 paths:
    ~1e-6). A swapped, transposed or missing layer moves logits by O(range)."""
    err = (q.double() - ref.double()).abs().max() / ref.abs().max()
    assert err < 0.03, f"max |logits - float64 reference| = {err:.4f} of the logit range"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_roundtrip_exact_and_matches_dequantized_reference(family, make_model, ids_for, run_logits,
                                                            tmp_path, rng_seed):
    model = make_model(family)
    fp = copy.deepcopy(model)
    ids = ids_for(model)
    quantize_model(model, "w4a16", progress=False)
    q = run_logits(model, ids)
    # fp32 storage: the file holds exactly the in-memory tensors
    save_quantized(model, tmp_path / "q", dtype=torch.float32)
    loaded = load_quantized(tmp_path / "q", device="cpu", progress=False)
    assert type(loaded) is type(model)
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == \
        sum(isinstance(m, QuantLinear) for m in model.modules()) > 0
    torch.testing.assert_close(run_logits(loaded, ids), q, rtol=0, atol=0)
    # float64 reference. The default CPU backend rounds to bf16 (bound in
    # assert_matches_reference); the dense backend computes in the model's dtype: fp32
    # accumulation over a 2-layer model of width <= 320 keeps relative errors near 1e-6,
    # so 1e-4 of the logit range leaves room for kernel orderings
    ref = run_logits(fake_quant_float64(fp, model), ids)
    assert_matches_reference(q, ref)
    qd = run_logits(use_backend(model, "dense"), ids)
    torch.testing.assert_close(qd.double(), ref.double(), rtol=0, atol=1e-4 * ref.abs().max().item())
    # close to the fp model. Tiny random models (weights ~N(0, 0.02)) have flat logits, so
    # relative logit errors are large: W4 g64 measured 0.02-0.32 across families (too close
    # to any bound to assert), W8 per-channel 0.002-0.019 (16x finer steps); assert W8 < 0.06
    fp_logits = run_logits(fp, ids)
    w8 = run_logits(quantize_model(fp, "w8a16", progress=False), ids)
    assert (w8 - fp_logits).norm() / fp_logits.norm() < 0.06


@pytest.mark.parametrize("scheme", ["w8a16", "w4a16-asym", "w3a16", "w8a8", "w4a8"])
def test_roundtrip_schemes(scheme, make_model, ids_for, run_logits, tmp_path, rng_seed):
    model = make_model("llama")
    ids = ids_for(model)
    quantize_model(model, scheme, progress=False)
    save_quantized(model, tmp_path / "q", dtype=torch.float32)
    loaded = load_quantized(tmp_path / "q", device="cpu", progress=False)
    torch.testing.assert_close(run_logits(loaded, ids), run_logits(model, ids), rtol=0, atol=0)


def test_default_storage_is_fp16(make_model, ids_for, run_logits, tmp_path, rng_seed):
    """An fp32 model is written in fp16: the loaded model equals the in-memory one with
    its non-quantized tensors rounded to fp16 (scales were fp16 from quantization on)."""
    model = make_model("qwen2")
    ids = ids_for(model)
    quantize_model(model, "w4a16", progress=False)
    save_quantized(model, tmp_path / "q")
    loaded = load_quantized(tmp_path / "q", device="cpu", progress=False)
    assert all(m.weight_scale.dtype == torch.float16 for m in loaded.modules() if isinstance(m, QuantLinear))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    torch.testing.assert_close(run_logits(loaded, ids), run_logits(model, ids), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2"])
def test_quantized_embedding_roundtrip(family, make_model, ids_for, run_logits, tmp_path, rng_seed):
    model = make_model(family)
    fp = copy.deepcopy(model)
    ids = ids_for(model)
    quantize_model(model, "w4a16", progress=False, quantize_embedding=True)
    emb = model.get_input_embeddings()
    assert isinstance(emb, QuantEmbedding)
    if model.config.tie_word_embeddings:  # the head reads the very same int8 table
        assert model.lm_head.weight_packed is emb.weight_packed
    q = run_logits(model, ids)
    save_quantized(model, tmp_path / "q", dtype=torch.float32)
    loaded = load_quantized(tmp_path / "q", device="cpu", progress=False)
    lemb = loaded.get_input_embeddings()
    assert isinstance(lemb, QuantEmbedding)
    if model.config.tie_word_embeddings:
        assert loaded.lm_head.weight_packed is lemb.weight_packed
    torch.testing.assert_close(run_logits(loaded, ids), q, rtol=0, atol=0)
    ref = run_logits(fake_quant_float64(fp, model), ids)
    assert_matches_reference(q, ref)
    qd = run_logits(use_backend(model, "dense"), ids)  # exact-dtype backend, as above
    torch.testing.assert_close(qd.double(), ref.double(), rtol=0, atol=1e-4 * ref.abs().max().item())


def test_int8_embedding_is_per_row_rtn(rng_seed):
    """Independent check of the table: q = round(w / s), s = absmax(row) / 127.5 (the
    compressed-tensors symmetric convention), so |w - w_hat| <= s / 2 per element."""
    emb = torch.nn.Embedding(50, 36)
    qe = QuantEmbedding.from_embedding(emb, torch.float32)
    w = emb.weight.detach().double()
    s = w.abs().amax(dim=1, keepdim=True) / 127.5
    torch.testing.assert_close(qe.weight_scale.double(), s, rtol=1e-6, atol=0)
    err = (qe.dequantize_weight(torch.float64) - w).abs()
    # the row max sits exactly 127.5 steps out; the fp32-rounded stored scale moves it by up
    # to 127.5 * 2^-24 ~ 8e-6 of a step past the half-step bound
    assert (err <= s / 2 * (1 + 1e-4)).all()
    ids = torch.randint(0, 50, (3, 7))
    torch.testing.assert_close(qe(ids), qe.dequantize_weight(torch.float32)[ids], rtol=0, atol=0)


def test_device_map_auto_on_cpu(make_model, ids_for, run_logits, tmp_path, rng_seed):
    model = make_model("llama")
    ids = ids_for(model)
    quantize_model(model, "w4a16", progress=False)
    save_quantized(model, tmp_path / "q", dtype=torch.float32)
    loaded = load_quantized(tmp_path / "q", device_map="auto", progress=False)
    assert set(loaded.hf_device_map.values()) == {"cpu"}
    torch.testing.assert_close(run_logits(loaded, ids), run_logits(model, ids), rtol=0, atol=0)
