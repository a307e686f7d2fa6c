"""The engine's decoder over the paged KV cache gives transformers' logits on the same
weights: a prefill (whole or in chunks) and then cached decode steps, for every supported
family, fp and quantized, and for the real SmolLM2."""
import pytest
import torch
from tiny_decoders import FAMILIES, hf_logits, make_decoder

from qrt.engine.attention import paged_attention_reference
from qrt.engine.block_manager import BlockManager
from qrt.engine.model_runner import ModelRunner
from qrt.engine.models.llama import UnsupportedModelError
from qrt.engine.sequence import Sequence


def run_engine(model, ids, chunks, page_size=4, num_blocks=64, attention=None, lm_head="model"):
    """Feed ids through the runner: prefill chunks (sizes), then one token per step.
    -> float32 logits [len(ids) - sum(chunks) + 1, vocab], one per step that reached the end.
    lm_head="model" (the default, explicit here): the decoder is compared with the model's own
    head (the int8 head is checked on its own in tests/runtime/test_lm_head.py)."""
    kw = {"lm_head": lm_head} if attention is None else {"attention": attention, "lm_head": lm_head}
    runner = ModelRunner(model, num_blocks=num_blocks, page_size=page_size, max_model_len=256, **kw)
    bm = BlockManager(num_blocks, page_size, enable_prefix_caching=False)
    seq = Sequence("s", list(ids[:sum(chunks)]), max_tokens=len(ids))
    bm.allocate(seq)
    out = []
    for n in chunks:
        logits = runner.run([(seq, n)])
        seq.num_computed_tokens += n
    out.append(logits[0])
    for t in ids[sum(chunks):]:
        seq.append_token(t)
        bm.append_slots(seq)
        out.append(runner.run([(seq, 1)])[0])
        seq.num_computed_tokens += 1
    return torch.stack(out)


# fp32 on both sides; the two forwards differ only in reduction order (attention shapes,
# q/k/v split), ~1e-7 relative per op, so logits of magnitude ~1 agree to ~1e-6 after two
# layers. 2e-5 leaves 10x margin and still catches any wrong op (a missing bias/norm moves
# logits by > 1e-2, a wrong rotary position by > 1e-3).
TOL = dict(rtol=0, atol=2e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("chunks", [(12,), (5, 4, 3)])
def test_logits_match_transformers(family, chunks):
    model = make_decoder(family)
    ids = torch.randint(0, 300, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    ref = hf_logits(model, ids)[sum(chunks) - 1:]
    torch.testing.assert_close(run_engine(model, ids, chunks), ref, **TOL)


def test_float64_reference_attention_matches_too():
    model = make_decoder("qwen3")
    ids = list(range(3, 19))
    ref = hf_logits(model, ids)[9:]
    got = run_engine(model, ids, (10,), attention=paged_attention_reference)
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("scheme,backend,atol", [
    # dense: the dequantized weight in fp32, so the fp32 tolerance above holds
    ("w4a16", "dense", 2e-5),
    # torch's int4 CPU kernel computes in bfloat16 (relative rounding 2^-8 ~ 4e-3 per
    # output), and its accumulation order depends on the number of rows (20 in transformers'
    # forward, 1 in a decode step): logits of magnitude ~0.5 move by up to ~2e-3
    ("w4a16", None, 5e-3),
    # int8 activations are quantized per token, so rows do not interact; int32 accumulation
    # is exact and the fp32 epilogue is per element
    ("w8a8", None, 2e-5),
])
def test_quantized_model_logits_match(scheme, backend, atol):
    import qrt
    model = make_decoder("llama")
    qrt.quantize_model(model, scheme, progress=False)
    if backend is not None:
        for m in model.modules():
            if isinstance(m, qrt.QuantLinear):
                m.finalize(backend)
    ids = list(range(5, 25))
    ref = hf_logits(model, ids)[11:]
    torch.testing.assert_close(run_engine(model, ids, (12,)), ref, rtol=0, atol=atol)


def test_unsupported_architecture_is_refused():
    import transformers as tf
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="supported: llama, mistral, qwen2, qwen3"):
        ModelRunner(model, num_blocks=4, page_size=4, max_model_len=16)


@pytest.mark.slow
def test_smollm2_prefill_and_decode_match_transformers():
    from qrt.hub import load_fp_model
    from qrt.hub.embedded import smollm2_dir
    model, tok = load_fp_model(smollm2_dir(), dtype=torch.float32)
    ids = tok("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids[0].tolist()
    ids = ids + [tok.encode(" Berlin")[0], 13, 504, 3575]
    ref = hf_logits(model, ids)[len(ids) - 5:]
    got = run_engine(model, ids, (len(ids) - 9, 5), page_size=16, num_blocks=8)
    # 30 layers and logits of magnitude ~20: fp32 reduction-order noise grows to ~1e-4;
    # 1e-3 is still 100x below what a wrong position or a dropped norm changes
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-3)
    assert got[:-4].argmax(-1).tolist() == ref[:-4].argmax(-1).tolist()


@pytest.mark.skipif(__import__("os").environ.get("TRITON_INTERPRET") != "1",
                    reason="the Triton kernel runs on the CPU only under TRITON_INTERPRET=1")
def test_triton_attention_in_the_model_matches_transformers():
    from qrt.engine.attention import triton_paged_attention
    model = make_decoder("mistral")  # sliding window 7 < sequence length
    ids = list(range(7, 23))
    ref = hf_logits(model, ids)[9:]
    torch.testing.assert_close(run_engine(model, ids, (6, 4), attention=triton_paged_attention), ref, **TOL)


def test_bfloat16_model_runs_in_bfloat16():
    """--dtype bfloat16: activations and the KV cache follow the model's dtype."""
    model = make_decoder("qwen3").to(torch.bfloat16)
    ids = list(range(4, 20))
    ref = hf_logits(model, ids)[9:]
    got = run_engine(model, ids, (10,))
    runner = ModelRunner(model, num_blocks=4, page_size=4, max_model_len=16)
    assert runner.kv_caches[0][0].dtype == torch.bfloat16
    # bf16 rounds at 2^-9 relative per op, and the two forwards round different intermediate
    # values (attention shapes, rotary on packed rows): logits of magnitude ~1 drift by up to a
    # few 1e-2; a wrong op moves them by > 1e-1
    torch.testing.assert_close(got, ref, rtol=0, atol=6e-2)
    assert (got - ref).abs().mean() < 1e-2
