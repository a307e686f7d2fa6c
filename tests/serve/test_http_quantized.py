"""A W4A16 qrt checkpoint behind the server: loaded with qrt.load_quantized, served with
QuantLinear layers, outputs checked against the same checkpoint run through transformers'
`generate` one request at a time."""

import openai
import pytest
from conftest import serve_in_thread
from tiny_serving import greedy_alone_and_together, greedy_tokens

from qrt import load_quantized
from qrt.runtime.linear import QuantLinear

PROMPTS = ["Hello world", "The quick brown fox", "Paged attention keeps the KV cache in", "tiny"]


@pytest.fixture(scope="module")
def qserver(tiny_w4a16_dir):
    with serve_in_thread(tiny_w4a16_dir, kv_cache_mb=8, max_num_seqs=8) as s:
        yield s


def test_served_model_is_quantized(qserver):
    layers = [m for m in qserver.engine.model.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.scheme.bits == 4 and m.scheme.activations is None for m in layers)


def test_quantized_greedy_batched_equals_alone_and_generate(qserver, tiny_w4a16_dir):
    client = openai.OpenAI(base_url=qserver.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)

    alone, together = greedy_alone_and_together(client, PROMPTS, 12)
    assert together == alone

    model = load_quantized(tiny_w4a16_dir, device="cpu", progress=False)  # an independent copy, plain generate
    tok = qserver.engine.tokenizer
    for prompt, text in zip(PROMPTS, alone):
        out = greedy_tokens(model, tok(prompt).input_ids, 12)  # never stops at EOS, like ignore_eos
        assert text == tok.decode(out, skip_special_tokens=True)
