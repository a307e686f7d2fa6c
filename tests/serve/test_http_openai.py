"""The server over real HTTP on 127.0.0.1, driven by the official `openai` client.

Reference for outputs: the same model run one request at a time through transformers'
own `generate` (greedy), an implementation independent of the serving engine."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tiny_serving import greedy_alone_and_together, greedy_tokens
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ["Hello world", "The quick brown fox jumps over", "Paged attention keeps",
           "Continuous batching shares forward passes between requests and", "tiny", "blocks of the KV cache"]


def hf_greedy(model_dir, prompt_ids: list[int], n: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return greedy_tokens(model, prompt_ids, n)  # never stops at EOS, like ignore_eos


def test_completion_greedy_matches_transformers_generate(client, tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    r = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=12, temperature=0,
                                  extra_body={"ignore_eos": True})
    expected = tok.decode(hf_greedy(tiny_dir, tok(PROMPTS[1]).input_ids, 12), skip_special_tokens=True)
    assert r.choices[0].text == expected
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(tok(PROMPTS[1]).input_ids), 12)


def test_chat_uses_chat_template(client, tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                       extra_body={"ignore_eos": True})
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert r.usage.prompt_tokens == len(ids)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == tok.decode(hf_greedy(tiny_dir, list(ids), 8), skip_special_tokens=True)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_streaming_chunks_add_up_to_the_full_response(client, endpoint):
    kw = dict(model="tiny", max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    if endpoint == "chat":
        full = client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **kw)
        stream = client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], stream=True,
                                                stream_options={"include_usage": True}, **kw)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == full.choices[0].message.content
    else:
        full = client.completions.create(prompt="Hello world", **kw)
        chunks = list(client.completions.create(prompt="Hello world", stream=True,
                                                stream_options={"include_usage": True}, **kw))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10  # usage chunk last
    assert len([c for c in chunks if c.choices]) >= 2  # really streamed, not one blob


def test_concurrent_greedy_equals_one_at_a_time(client):
    alone, together = greedy_alone_and_together(client, PROMPTS, 16)
    assert together == alone


def test_seeded_sampling_is_reproducible_under_concurrency(client):
    def ask(seed):
        r = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=1.0, top_p=0.9,
                                      seed=seed, extra_body={"top_k": 50, "ignore_eos": True})
        return r.choices[0].text
    alone = [ask(s) for s in (1, 2, 3)]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(ask, (1, 2, 3)))
    assert together == alone
    assert len(set(alone)) > 1  # different seeds sample different continuations


def test_stop_string_ends_and_is_excluded(client):
    base = client.completions.create(model="tiny", prompt="Hello world", max_tokens=16, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    # a 2-character stop string from the middle of the greedy output (no spaces or broken UTF-8)
    stop = next((base[i:i + 2] for i in range(2, len(base) - 1)
                 if not any(c.isspace() or c == "\ufffd" for c in base[i:i + 2])), None)
    assert stop is not None, f"no usable stop string in {base!r}"
    r = client.completions.create(model="tiny", prompt="Hello world", max_tokens=16, temperature=0, stop=[stop],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == base[:base.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_models_health_metrics(client, server):
    import httpx
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    client.completions.create(model="tiny", prompt="x", max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
    text = httpx.get(server.base_url + "/metrics").text
    lines = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert int(lines['qrt_requests_total{status="length"}']) >= 1
    assert int(lines["qrt_generation_tokens_total"]) >= 3
    assert int(lines["qrt_time_to_first_token_seconds_count"]) >= 1
    assert float(lines["qrt_requests_waiting"]) == 0.0
    assert "# TYPE qrt_e2e_request_latency_seconds histogram" in text
