"""Bad requests, overload, disconnects and failures over real HTTP on 127.0.0.1."""
import json
import socket
import threading
import time

import httpx
import pytest
from conftest import serve_in_thread


def post(server, body, path="/v1/completions", **kw):
    return httpx.post(server.base_url + path, timeout=60, **kw,
                      **({"content": body, "headers": {"content-type": "application/json"}}
                         if isinstance(body, str) else {"json": body}))


def error_of(r) -> dict:
    return r.json()["error"]


def test_malformed_json_is_400(server):
    r = post(server, '{"prompt": "hi", "max_tokens": ')
    assert r.status_code == 400 and "invalid JSON" in error_of(r)["message"]


@pytest.mark.parametrize("field,value", [("max_tokens", -1), ("max_tokens", 0), ("temperature", -0.5),
                                         ("top_p", 0.0), ("top_p", 1.5), ("top_k", 0), ("seed", -3),
                                         ("n", 2), ("stop", ["a", "b", "c", "d", "e"])])
def test_invalid_field_is_400_naming_it(server, field, value):
    r = post(server, {"prompt": "hi", field: value})
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == field and error_of(r)["message"].startswith(field)


def test_missing_prompt_and_empty_messages_are_400(server):
    r = post(server, {"max_tokens": 3})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    r = post(server, {"messages": []}, path="/v1/chat/completions")
    assert r.status_code == 400 and error_of(r)["param"] == "messages"


def test_over_long_prompt_is_400(server):
    limit = server.engine.max_model_len
    r = post(server, {"prompt": list(range(3, 3 + limit)), "max_tokens": 1})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    assert str(limit) in error_of(r)["message"]
    r = post(server, {"prompt": "hi", "max_tokens": limit})  # prompt fits, prompt + output does not
    assert r.status_code == 400 and "max_tokens" in error_of(r)["message"]
    r = post(server, {"prompt": [10 ** 6], "max_tokens": 1})  # token id outside the vocabulary
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"


def test_queue_full_is_429_and_the_queue_drains(tiny_dir):
    with serve_in_thread(tiny_dir, kv_cache_mb=4, max_num_seqs=1, max_waiting=1) as srv:
        body = {"prompt": "Hello", "max_tokens": 150, "ignore_eos": True, "stream": True}
        with httpx.Client(timeout=60) as c1, httpx.Client(timeout=60) as c2, \
                c1.stream("POST", srv.base_url + "/v1/completions", json=body) as r1, \
                c2.stream("POST", srv.base_url + "/v1/completions", json=body) as r2:
            assert r1.status_code == 200 and r2.status_code == 200  # one running, one waiting
            r3 = post(srv, {"prompt": "Hello", "max_tokens": 2})
            assert r3.status_code == 429 and error_of(r3)["type"] == "rate_limit_exceeded"
            assert r1.read().decode().rstrip().endswith("data: [DONE]")
            assert r2.read().decode().rstrip().endswith("data: [DONE]")
        assert post(srv, {"prompt": "Hello", "max_tokens": 2}).status_code == 200


def _wait_until(cond, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _metric(server, name: str) -> float:
    for line in httpx.get(server.base_url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_and_frees_blocks(server, stream):
    eng = server.engine
    total = eng.num_blocks
    aborts = _metric(server, 'qrt_requests_total{status="abort"}')
    body = {"prompt": list(range(3, 40)), "max_tokens": 200, "ignore_eos": True, "stream": stream}
    # 20 ms per forward: the request would run >= 4 s, far longer than the disconnect takes to notice
    slow = eng.model.get_input_embeddings().register_forward_pre_hook(lambda m, a: time.sleep(0.02))
    try:
        if stream:
            with httpx.Client(timeout=60) as c, c.stream("POST", server.base_url + "/v1/completions", json=body) as r:
                next(r.iter_lines())  # the request is generating
                assert _wait_until(lambda: (eng.free_blocks() or total) < total)
        else:  # raw socket: send the request, see it generating, hang up without reading
            host, port = server.base_url.removeprefix("http://").split(":")
            payload = json.dumps(body).encode()
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                assert _wait_until(lambda: (eng.free_blocks() or total) < total)
        hung_up = time.monotonic()
        assert _wait_until(lambda: eng.num_requests() == (0, 0) and eng.free_blocks() == total), \
            (eng.num_requests(), eng.free_blocks(), total)
        assert time.monotonic() - hung_up < 3.5  # aborted, not run to its 200 tokens
    finally:
        slow.remove()
    assert _metric(server, 'qrt_requests_total{status="abort"}') == aborts + 1


def test_a_failing_request_does_not_take_the_server_down(server):
    """A forward that raises (poisoned input) fails that request; the engine restarts and
    the next request is served correctly."""
    poison = 7
    reference = post(server, {"prompt": [5, 6], "max_tokens": 6, "ignore_eos": True, "temperature": 0}).json()

    def hook(module, args):
        if (args[0] == poison).any():
            raise RuntimeError("poisoned input")
    handle = server.engine.model.get_input_embeddings().register_forward_pre_hook(hook)
    try:
        r = post(server, {"prompt": [poison, 6], "max_tokens": 6})
        assert r.status_code == 500 and error_of(r)["type"] == "server_error"
        again = post(server, {"prompt": [5, 6], "max_tokens": 6, "ignore_eos": True, "temperature": 0})
    finally:
        handle.remove()
    assert again.status_code == 200 and again.json()["choices"][0]["text"] == reference["choices"][0]["text"]
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_many_bad_and_good_requests_interleaved(server):
    """Parallel junk never disturbs parallel valid requests."""
    results = {}

    def good(i):
        results[i] = post(server, {"prompt": "Hello", "max_tokens": 5, "temperature": 0, "ignore_eos": True})

    def bad(i):
        results[i] = post(server, '{"prompt": [1, 2' if i % 2 else {"prompt": "x", "max_tokens": -5})
    threads = [threading.Thread(target=(good if i % 3 == 0 else bad), args=(i,)) for i in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    texts = {r.json()["choices"][0]["text"] for i, r in results.items() if i % 3 == 0}
    assert all(results[i].status_code == 200 for i in results if i % 3 == 0) and len(texts) == 1
    assert all(results[i].status_code == 400 for i in results if i % 3 != 0)
