"""Fixtures for the serving tests: tiny checkpoints on disk, and servers on 127.0.0.1."""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from tiny_serving import save_tiny

from qrt.serve.config import EngineConfig
from qrt.serve.engine import Engine


def _fresh_seed() -> int:
    """Fresh weights every run (the seed is in the tmp dir's name for reproducing a failure)."""
    return int.from_bytes(os.urandom(4), "little") % 2**31


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str
    engine: Engine


@contextmanager
def serve_in_thread(model_dir, server_config=None, **config):
    """A real uvicorn server on a free loopback port, in a thread of this process."""
    import uvicorn

    from qrt.hub.load import load_model
    from qrt.serve.server import build_app
    model, tok = load_model(str(model_dir))
    engine = Engine(model, tok, EngineConfig(num_threads=1, **config))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(engine, "tiny", server_config=server_config), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", engine)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama (fp32) + tokenizer, saved like a downloaded checkpoint."""
    seed = _fresh_seed()
    return save_tiny(tmp_path_factory.mktemp(f"tiny_fp32_seed{seed}"), seed=seed)


@pytest.fixture(scope="session")
def tiny_w4a16_dir(tmp_path_factory):
    """The same kind of model RTN-quantized to W4A16 and saved as a qrt (compressed-tensors) checkpoint."""
    seed = _fresh_seed()
    return save_tiny(tmp_path_factory.mktemp(f"tiny_w4a16_seed{seed}"), seed=seed, quantize="w4a16")


@pytest.fixture(scope="module")
def server(tiny_dir):
    with serve_in_thread(tiny_dir, kv_cache_mb=8, max_num_seqs=8, max_waiting=8) as s:
        yield s


@pytest.fixture
def client(server):
    import openai
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
