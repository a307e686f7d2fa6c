"""A real `qrt serve` process whose generation thread dies on every forward (fault injected),
for the test that a server whose engine gives up exits with status 1.

    python dying_server.py MODEL_DIR PORT
"""
import sys

from faults import Fault

from qrt.serve.config import EngineConfig
from qrt.serve.engine import Engine
from qrt.serve.model_loading import load_for_serving
from qrt.serve.run import serve_app
from qrt.serve.server import build_app

if __name__ == "__main__":
    model_dir, port = sys.argv[1], int(sys.argv[2])
    model, tok = load_for_serving(model_dir)
    Fault(after=0, kill_thread=True).attach(model)
    engine = Engine(model, tok, EngineConfig(num_threads=1, kv_cache_mb=8))
    sys.exit(serve_app(build_app(engine, "tiny"), engine, "127.0.0.1", port, graceful_timeout=5, log_level="warning"))
