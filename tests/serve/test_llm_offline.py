"""qrt.LLM(...).generate: continuous batching offline, checked against transformers' generate."""
import pytest
from tiny_serving import greedy_tokens

import qrt
from qrt.serve.config import EngineConfig
from qrt.serve.engine import Engine


@pytest.fixture(scope="module")
def llm(tiny_dir):
    llm = qrt.LLM(str(tiny_dir), max_num_seqs=2, max_waiting=1, kv_cache_mb=4, num_threads=1)
    yield llm
    llm.shutdown()


def test_generate_many_prompts_in_order_with_their_own_budgets(llm):
    """7 prompts through an engine admitting 3 at a time; each output equals plain generate."""
    tok = llm.tokenizer
    prompts = ["Hello", "The quick brown fox", "Paged attention keeps the KV cache", "tiny model",
               "Continuous batching", "dog", "Hello world, this is"]
    params = [qrt.SamplingParams(temperature=0, max_tokens=4 + i, ignore_eos=True) for i in range(len(prompts))]
    outs = llm.generate(prompts, params, use_tqdm=False)
    model = llm.engine.model
    for p, sp, out in zip(prompts, params, outs):
        ids = tok(p).input_ids
        assert out.prompt == p and out.prompt_token_ids == ids and out.finished
        assert out.outputs[0].token_ids == greedy_tokens(model, ids, sp.max_tokens)
        assert out.outputs[0].text == tok.decode(out.outputs[0].token_ids, skip_special_tokens=True)
        assert out.outputs[0].finish_reason == "length"
        m = out.metrics
        assert m.arrival_time <= m.first_token_time <= m.finished_time and len(m.token_times) == sp.max_tokens


def test_eos_stops_with_reason_stop(tiny_dir):
    """Make the 4th greedy token the EOS: generation must stop there (EOS kept in token_ids)."""
    from qrt.hub.load import load_model
    model, tok = load_model(str(tiny_dir))
    ids = tok("The quick brown fox").input_ids
    free_run = greedy_tokens(model, ids, 8)
    k = next(i for i in range(1, 8) if free_run[i] not in free_run[:i])
    model.generation_config.eos_token_id = free_run[k]
    llm = qrt.LLM(model, tok, kv_cache_mb=4, num_threads=1)
    try:
        out = llm.generate([ids], qrt.SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)[0]
        assert out.outputs[0].token_ids == free_run[:k + 1] and out.outputs[0].finish_reason == "stop"
        ignored = llm.generate([ids], qrt.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                               use_tqdm=False)[0]
        assert ignored.outputs[0].token_ids == free_run
    finally:
        llm.shutdown()


def test_bad_prompts_fail_before_anything_is_queued(llm):
    with pytest.raises(ValueError, match="prompt"):
        llm.generate([[]], use_tqdm=False)
    with pytest.raises(ValueError, match="context limit"):
        llm.generate(["Hello"], qrt.SamplingParams(max_tokens=llm.engine.max_model_len), use_tqdm=False)
    with pytest.raises(ValueError, match="sampling_params"):
        llm.generate(["a", "b"], [qrt.SamplingParams()] * 3, use_tqdm=False)
    assert llm.engine.num_requests() == (0, 0)


def test_abort_frees_blocks_and_reports_abort(tiny_dir):
    import threading
    import time

    from qrt.hub.load import load_model
    model, tok = load_model(str(tiny_dir))
    eng = Engine(model, tok, EngineConfig(kv_cache_mb=4, num_threads=1)).start()
    try:
        seen, done = [], threading.Event()

        def sink(out):
            seen.append(out)
            if out.finished:
                done.set()
        rid = eng.add_request(list(range(3, 60)), qrt.SamplingParams(max_tokens=150, ignore_eos=True), sink)
        while not seen:  # generating: it holds cache blocks
            time.sleep(0.01)
        assert eng.free_blocks() < eng.num_blocks
        eng.abort(rid)
        assert done.wait(10) and seen[-1].outputs[0].finish_reason == "abort"
        n = len(seen)
        deadline = time.monotonic() + 10  # the engine frees the blocks on its next step
        while eng.free_blocks() != eng.num_blocks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert eng.free_blocks() == eng.num_blocks and eng.num_requests() == (0, 0)
        assert len(seen) == n  # nothing is delivered after the abort
    finally:
        eng.stop()
