"""OpenAI-compatible HTTP server over the continuous-batching Engine (FastAPI + uvicorn).

Endpoints: POST /v1/completions, POST /v1/chat/completions (SSE when "stream": true),
GET /v1/models, /health, /metrics (Prometheus text).
Errors: 400 for an invalid body (the message names the field), 429 when the engine's
queue is full, 503 while shutting down or while the engine is down, 500 when the engine failed
a request; none of them stops the server. /health answers 503 while the engine cannot serve. A client that goes away aborts its request (freeing its KV blocks).
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from qrt.serve.engine import Engine
from qrt.serve.handlers import GenerationHandler, HTTPError
from qrt.serve.metrics import ServerMetrics
from qrt.serve.protocol import ChatCompletionRequest, CompletionRequest, error_body
from qrt.serve.responses import ResponseFormat


def build_app(engine: Engine, model_name: str, default_max_tokens: int = 16) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the engine."""
    metrics = ServerMetrics(gauges={
        "qrt_requests_waiting": ("Admitted requests without a token yet.", lambda: engine.num_requests()[0]),
        "qrt_requests_running": ("Requests generating.", lambda: engine.num_requests()[1]),
        "qrt_kv_cache_free_blocks": ("Free KV-cache blocks.", engine.free_blocks),
        "qrt_kv_cache_blocks": ("KV-cache blocks.", lambda: engine.num_blocks)})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()  # uvicorn has drained in-flight requests by now (graceful shutdown)

    app = FastAPI(title="qrt", lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics
    _add_error_handlers(app, metrics)
    _add_info_routes(app, engine, metrics, model_name)
    _add_generation_routes(app, engine, GenerationHandler(engine, metrics, default_max_tokens), model_name)
    return app


def _add_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = exc.errors()[0]
        metrics.record("rejected_400")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            return JSONResponse(error_body(f"invalid JSON body: {ctx}".rstrip(": "), None), status_code=400)
        param = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or None
        msg = err.get("msg", "invalid request")
        return JSONResponse(error_body(f"{param}: {msg}" if param else msg, param), status_code=400)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        metrics.record(f"rejected_{exc.status}")
        return JSONResponse(error_body(exc.message, exc.param, exc.kind, exc.status), status_code=exc.status)


def _add_info_routes(app: FastAPI, engine: Engine, metrics: ServerMetrics, model_name: str) -> None:
    @app.get("/health")
    async def health():
        problem = engine.health()
        if problem is not None:
            return JSONResponse({"status": "unhealthy", "reason": problem}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "qrt",
                "max_model_len": engine.max_model_len}
        return {"object": "list", "data": [card]}


def _add_generation_routes(app: FastAPI, engine: Engine, handler: GenerationHandler, model_name: str) -> None:
    tok = engine.tokenizer

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        ids = body.prompt if isinstance(body.prompt, list) else tok(body.prompt).input_ids
        if any(t < 0 or t >= len(tok) for t in ids):
            raise HTTPError(400, f"prompt: token ids must be in [0, {len(tok)})", "prompt")
        prompt = body.prompt if isinstance(body.prompt, str) else None
        return await handler.serve(request, body, ids, prompt, ResponseFormat("completion", model_name), "prompt")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        if not getattr(tok, "chat_template", None):
            raise HTTPError(400, "messages: this model has no chat template; use /v1/completions", "messages")
        msgs = [m.model_dump() for m in body.messages]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        return await handler.serve(request, body, list(ids), None, ResponseFormat("chat", model_name), "messages")
