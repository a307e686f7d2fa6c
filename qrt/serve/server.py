"""OpenAI-compatible HTTP server over the continuous-batching Engine (FastAPI + uvicorn).

Endpoints: POST /v1/completions, POST /v1/chat/completions (SSE when "stream": true),
GET /v1/models, /health, /metrics (Prometheus text).
Errors, all in OpenAI's shape ({"error": {message, type, param, code}}) and counted in
/metrics by status class: 400 for an invalid body (the message names the field), 404/405 for
an unknown route or method, 408 past the per-request deadline, 413 for a body over the size
limit, 429 when the engine's queue is full, 503 while shutting down or while the engine is
down, 500 when the engine failed a request or anything unexpected happened; none of them stops
the server. /health answers 503 while the engine cannot serve. A client that goes away aborts
its request (freeing its KV blocks). Limits: qrt.serve.config.ServerConfig.
"""
from __future__ import annotations

import re
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qrt.serve.config import ServerConfig
from qrt.serve.engine import Engine
from qrt.serve.guard import RequestGuard
from qrt.serve.handlers import GenerationHandler, HTTPError
from qrt.serve.metrics import ServerMetrics
from qrt.serve.openapi import GENERATION_RESPONSES, HEALTH_RESPONSES, install_openapi
from qrt.serve.prompts import PromptProcessor
from qrt.serve.protocol import ChatCompletionRequest, CompletionRequest, error_body
from qrt.serve.responses import ResponseFormat


def build_app(engine: Engine, model_name: str, default_max_tokens: int = 16,
              server_config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the engine."""
    cfg = server_config or ServerConfig()
    metrics = ServerMetrics(gauges={
        "qrt_requests_waiting": ("Admitted requests without a token yet.", lambda: engine.num_requests()[0]),
        "qrt_requests_running": ("Requests generating.", lambda: engine.num_requests()[1]),
        "qrt_kv_cache_free_blocks": ("Free KV-cache blocks.", engine.free_blocks),
        "qrt_kv_cache_blocks": ("KV-cache blocks.", lambda: engine.num_blocks)})

    prompts = PromptProcessor(engine.tokenizer, cfg.prompt_char_limit(engine.max_model_len))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()  # uvicorn has drained in-flight requests by now (graceful shutdown)
        prompts.close()

    app = FastAPI(title="qrt", lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics
    app.add_middleware(RequestGuard, metrics=metrics, max_body_bytes=cfg.max_body_bytes)
    _add_error_handlers(app, metrics)
    _add_info_routes(app, engine, metrics, model_name)
    handler = GenerationHandler(engine, metrics, default_max_tokens, cfg.request_timeout_s)
    _add_generation_routes(app, prompts, handler, model_name)
    install_openapi(app)
    return app


def _add_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = exc.errors()[0]
        metrics.record("rejected_400")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            return JSONResponse(error_body(f"invalid JSON body: {ctx}".rstrip(": "), None), status_code=400)
        path = [str(p) for p in err.get("loc", ()) if p != "body" and not _union_tag(p)]
        param = path[0] if path else None  # the top-level field; the message has the full path
        msg = err.get("msg", "invalid request")
        return JSONResponse(error_body(f"{'.'.join(path)}: {msg}" if path else msg, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException):
        """404/405 and FastAPI's own body errors (e.g. a body that is not UTF-8), in OpenAI's shape."""
        metrics.record(f"rejected_{exc.status_code}")
        return JSONResponse(error_body(str(exc.detail), None, "invalid_request_error", exc.status_code),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        metrics.record(f"rejected_{exc.status}")
        return JSONResponse(error_body(exc.message, exc.param, exc.kind, exc.status), status_code=exc.status)


def _union_tag(part) -> bool:
    """pydantic names the union member in an error's loc ('str', 'list[...]', 'constrained-str'): not a field."""
    return isinstance(part, str) and (part in ("str", "int") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part))


def _add_info_routes(app: FastAPI, engine: Engine, metrics: ServerMetrics, model_name: str) -> None:
    @app.get("/health", responses=HEALTH_RESPONSES)
    async def health():
        problem = engine.health()
        if problem is not None:
            return JSONResponse({"status": "unhealthy", "reason": problem}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "qrt",
                "max_model_len": engine.max_model_len}
        return {"object": "list", "data": [card]}


def _add_generation_routes(app: FastAPI, prompts: PromptProcessor, handler: GenerationHandler,
                           model_name: str) -> None:
    @app.post("/v1/completions", responses=GENERATION_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        deadline = handler.deadline()
        ids = await prompts.completion_ids(body.prompt)
        prompt = body.prompt if isinstance(body.prompt, str) else None
        return await handler.serve(request, body, ids, prompt, ResponseFormat("completion", model_name), "prompt",
                                   deadline)

    @app.post("/v1/chat/completions", responses=GENERATION_RESPONSES)
    async def chat(body: ChatCompletionRequest, request: Request):
        deadline = handler.deadline()
        ids = await prompts.chat_ids([m.model_dump() for m in body.messages])
        return await handler.serve(request, body, ids, None, ResponseFormat("chat", model_name), "messages", deadline)
