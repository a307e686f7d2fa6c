"""LLMEngine end to end on a tiny random Llama: greedy equals transformers' argmax loop,
batching/chunking/preemption/prefix caching do not change outputs, abort frees blocks,
per-request sampling is reproducible whatever the batch."""
import pytest
import torch
from tiny_decoders import make_decoder

from qrt import SamplingParams
from qrt.engine.llm_engine import LLMEngine
from qrt.engine.scheduler import SchedulerConfig

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    return make_decoder("llama", seed=3)


def prompts(n, seed=0, lo=3, hi=30):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def engine(model, **kw):
    cfg = dict(num_blocks=64, page_size=4, max_num_seqs=8, max_batch_tokens=64, max_model_len=64,
               enable_prefix_caching=True)
    cfg.update(kw)
    return LLMEngine(model, SchedulerConfig(**cfg), eos_token_ids=[2])


def hf_greedy(model, ids, n):
    """Independent reference: transformers' full forward over the growing sequence, argmax."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:]


def test_greedy_equals_transformers(model):
    ps = prompts(3)
    assert engine(model).generate(ps, GREEDY) == [hf_greedy(model, p, 12) for p in ps]


def test_batch_invariance_and_chunked_prefill(model):
    """Eight requests batched (prefills chunked at 16 tokens) == each run alone, unchunked."""
    ps = prompts(8, seed=1)
    batched = engine(model, max_batch_tokens=16).generate(ps, GREEDY)
    alone = [engine(model, max_num_seqs=1).generate([p], GREEDY)[0] for p in ps]
    assert batched == alone


def test_preemption_recomputes_to_the_same_outputs(model):
    ps = prompts(6, seed=2, lo=10, hi=20)
    ref = engine(model).generate(ps, GREEDY)
    small = engine(model, num_blocks=16, max_model_len=32)  # 6 requests x ~7 blocks do not fit
    assert small.generate(ps, GREEDY) == ref
    assert small.scheduler.num_preemptions > 0
    assert small.num_free_blocks == 16


def test_prefix_caching_reuses_blocks_and_keeps_outputs(model):
    shared = prompts(1, seed=4, lo=25, hi=26)[0]
    ps = [shared + [7, 8], shared + [9]]
    ref = engine(model, enable_prefix_caching=False).generate(ps, GREEDY)
    eng = engine(model)
    assert eng.generate([ps[0]], GREEDY) == ref[:1]
    seq = eng.add_request("second", ps[1], GREEDY)
    eng.step()
    assert seq.num_cached_tokens == 24  # 6 full blocks of the shared 25-token prefix
    while eng.has_unfinished():
        eng.step()
    assert seq.output_ids == ref[1]


def test_abort_frees_blocks(model):
    eng = engine(model, enable_prefix_caching=False)
    for i, p in enumerate(prompts(4, seed=5)):
        eng.add_request(f"r{i}", p, GREEDY)
    eng.step(), eng.step()
    assert eng.num_free_blocks < 64
    for i in range(4):
        assert eng.abort_request(f"r{i}")
    assert eng.num_free_blocks == 64 and not eng.has_unfinished()
    assert not eng.abort_request("r0")


def test_eos_finishes_with_stop(model):
    p = prompts(1, seed=6)[0]
    first = hf_greedy(model, p, 1)[0]
    eng = LLMEngine(model, SchedulerConfig(num_blocks=32, page_size=4, max_model_len=64), eos_token_ids=[first])
    eng.add_request("x", p, SamplingParams(temperature=0, max_tokens=5))
    (out,) = eng.step()
    assert out.finished and out.finish_reason == "stop" and out.new_token == first


def test_seeded_sampling_ignores_the_batch(model):
    ps = prompts(4, seed=7)
    sp = [SamplingParams(temperature=0.9, top_p=0.9, top_k=50, seed=100 + i, max_tokens=10, ignore_eos=True)
          for i in range(4)]
    batched = engine(model).generate(ps, sp)
    alone = [engine(model).generate([p], s)[0] for p, s in zip(ps, sp)]
    assert batched == alone
    assert batched != engine(model).generate(ps, GREEDY)  # it really sampled


def test_tiny_temperature_is_greedy(model):
    """1e-40 is a valid temperature; logits / 1e-40 would overflow to inf (NaN softmax)."""
    ps = prompts(2, seed=8)
    tiny = SamplingParams(temperature=1e-40, max_tokens=12, ignore_eos=True, seed=1)
    assert engine(model).generate(ps, tiny) == engine(model).generate(ps, GREEDY)


def test_too_long_request_is_refused(model):
    with pytest.raises(ValueError, match="exceed max_model_len 64"):
        engine(model).add_request("x", list(range(60)), SamplingParams(max_tokens=8))
