"""Start the HTTP server: load the model, build the app, run uvicorn until SIGINT/SIGTERM.

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish (up to
`graceful_timeout` seconds), then the app's lifespan stops the engine. If the engine gives up
(its generation loop keeps dying), the server shuts down and `run_server` returns exit status 1,
so a supervisor (systemd, Kubernetes) restarts the process.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from qrt.serve.config import EngineConfig, ServerConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run_server(model_or_dir: str = "smollm2", host: str = "127.0.0.1", port: int = 8000,
               quantize: str | None = None, config: EngineConfig | None = None, served_model_name: str | None = None,
               default_max_tokens: int = 16, graceful_timeout: float = 30.0, log_level: str = "info",
               device=None, dtype=None, server_config: ServerConfig | None = None) -> int:
    """Serve until SIGINT/SIGTERM (returns 0) or until the engine gives up (returns 1).
    device / dtype: as qrt.hub.load_model (default: cuda + bfloat16 with a GPU, else cpu + float32)."""
    from qrt.hub.load import load_model, require_tokenizer
    from qrt.serve.engine import Engine
    from qrt.serve.server import build_app
    if not 0 <= port < 65536:
        raise ValueError(f"port: expected 0..65535, found {port}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, tokenizer = load_model(model_or_dir, device=device, dtype=dtype, quantize=quantize)
    require_tokenizer(tokenizer, model_or_dir, "serving needs the model's tokenizer")
    engine = Engine(model, tokenizer, config or EngineConfig())
    app = build_app(engine, served_model_name or model_name(model_or_dir), default_max_tokens, server_config)
    if host not in LOOPBACK:
        logging.getLogger("qrt.serve").warning("listening on %s: the server has no authentication", host)
    return serve_app(app, engine, host, port, graceful_timeout, log_level)


def serve_app(app, engine, host: str, port: int, graceful_timeout: float = 30.0, log_level: str = "info") -> int:
    """Run uvicorn on `app` until a signal (-> 0) or until `engine` gives up (-> 1)."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=graceful_timeout))
    fatal: list[str] = []

    def give_up(reason: str) -> None:
        logging.getLogger("qrt.serve").error("shutting down: %s", reason)
        fatal.append(reason)
        server.should_exit = True
    engine.on_fatal = give_up
    # uvicorn re-raises the signal it stopped on once it has drained; a no-op handler
    # underneath turns that into a normal return, so a SIGTERM'd server exits with status 0
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    logging.getLogger("qrt.serve").info("server stopped")
    return 1 if fatal else 0


def model_name(model_or_dir: str) -> str:
    """The id /v1/models reports: the argument as given, or the directory's name."""
    p = Path(str(model_or_dir))
    return p.name if p.is_dir() else str(model_or_dir)
