"""Liveness over HTTP: when the engine's loop dies, requests in flight and new ones fail within
2 s with a JSON error (500/503), /health reports it, the engine restarts, and a server whose
engine gives up exits non-zero so a supervisor can act."""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port, serve_in_thread
from faults import Fault, wait_until

from qrt.serve.engine import MAX_RESTARTS

# the injected thread death is reported by threading.excepthook: expected here, not a test problem
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
BOUND_S = 2.0
HERE = Path(__file__).resolve().parent
LONG = {"prompt": "Hello", "max_tokens": 200, "ignore_eos": True, "temperature": 0}


def _post(base, body, timeout=60):
    r = httpx.post(base + "/v1/completions", json=body, timeout=timeout)
    return r, time.monotonic()


def _stream(base, body, timeout=60):
    with httpx.Client(timeout=timeout) as c, c.stream("POST", base + "/v1/completions",
                                                      json={**body, "stream": True}) as r:
        text = "\n".join(r.iter_lines())
    return text, time.monotonic()


@pytest.mark.parametrize("kill_thread", [False, True], ids=["forward-raises", "thread-dies"])
def test_in_flight_requests_fail_fast_with_json_errors_and_the_server_recovers(tiny_dir, kill_thread):
    with serve_in_thread(tiny_dir, kv_cache_mb=8, max_num_seqs=4) as s:
        fault = Fault(after=6, kill_thread=kill_thread)  # a few tokens in, both requests running
        handle = fault.attach(s.engine.model)
        try:
            with ThreadPoolExecutor(2) as pool:
                plain = pool.submit(_post, s.base_url, LONG)
                streamed = pool.submit(_stream, s.base_url, LONG)
                (r, plain_done), (text, stream_done) = plain.result(60), streamed.result(60)
        finally:
            handle.remove()
        assert fault.fired_at is not None
        assert plain_done - fault.fired_at < BOUND_S and stream_done - fault.fired_at < BOUND_S
        assert r.status_code in (500, 503), r.text
        err = r.json()["error"]
        assert err["type"] in ("server_error", "service_unavailable") and err["message"]
        if not kill_thread:
            assert "injected fault" in err["message"]
        assert '"error"' in text, text  # the stream ends with an error event, not a silent cut
        assert wait_until(lambda: httpx.get(s.base_url + "/health").status_code == 200, BOUND_S)
        ok, _ = _post(s.base_url, {**LONG, "max_tokens": 4})
        assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "length"


def test_health_and_new_requests_say_503_once_the_engine_gives_up(tiny_dir):
    with serve_in_thread(tiny_dir, kv_cache_mb=8, max_num_seqs=4) as s:
        handle = Fault(after=0, kill_thread=True).attach(s.engine.model)
        try:
            for _ in range(MAX_RESTARTS + 1):
                r, _ = _post(s.base_url, {**LONG, "max_tokens": 4})
                assert r.status_code in (500, 503) and "error" in r.json()
            assert wait_until(lambda: s.engine.failed is not None, BOUND_S)
            health = httpx.get(s.base_url + "/health")
            assert health.status_code == 503 and "engine failed" in health.json()["reason"]
            r, done = _post(s.base_url, {**LONG, "max_tokens": 4})
            assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        finally:
            handle.remove()


@pytest.mark.slow  # a fresh interpreter imports torch + transformers: ~10-40 s
def test_a_server_whose_engine_gives_up_exits_non_zero(tiny_dir, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(HERE / "dying_server.py"), str(tiny_dir), str(port)],
                            stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(HERE)})
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _healthy(base) or proc.poll() is not None, 120, 0.2), "server did not start"
        for _ in range(MAX_RESTARTS + 1):
            try:
                httpx.post(base + "/v1/completions", json={**LONG, "max_tokens": 4}, timeout=30)
            except httpx.TransportError:
                break  # already shutting down
        assert proc.wait(timeout=30) == 1, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def _healthy(base) -> bool:
    try:
        return httpx.get(base + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
