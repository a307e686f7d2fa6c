"""`qrt serve` as a real process: SIGTERM lets the in-flight request finish, then exits 0."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a fresh interpreter imports torch + transformers: ~20-40 s on the shared CPU
def test_sigterm_drains_in_flight_requests_and_exits_cleanly(tiny_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / ".dev") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "qrt", "serve", str(tiny_dir), "--port", str(port),
                             "--kv-cache-mb", "8", "--log-level", "warning"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        body = {"prompt": "Hello", "max_tokens": 120, "ignore_eos": True, "stream": True}
        with httpx.Client(timeout=60) as c, c.stream("POST", base + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)  # generating
            proc.send_signal(signal.SIGTERM)
            rest = "\n".join(lines)
        assert rest.rstrip().endswith("data: [DONE]")  # the request was finished, not cut
        assert '"finish_reason":"length"' in rest.replace(" ", "")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
