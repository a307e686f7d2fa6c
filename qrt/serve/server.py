"""OpenAI-compatible HTTP server over the continuous-batching Engine (FastAPI + uvicorn).

Endpoints: POST /v1/completions, POST /v1/chat/completions (SSE when "stream": true),
GET /v1/models, /health, /metrics (Prometheus text).
Errors: 400 for an invalid body (the message names the field), 429 when the engine's
queue is full, 503 while shutting down, 500 when the engine failed a request; none of them
stops the server. A client that goes away aborts its request (freeing its KV blocks).
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from qrt.serve.engine import Engine, QueueFullError
from qrt.serve.metrics import ServerMetrics
from qrt.serve.outputs import RequestOutput
from qrt.serve.protocol import ChatCompletionRequest, CompletionRequest, error_body
from qrt.serve.responses import ResponseFormat, sse

log = logging.getLogger("qrt.serve")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class _Outputs:
    """Carries one request's outputs from the engine thread into the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def sink(self, out: RequestOutput) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, out)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    async def next(self) -> RequestOutput:
        """The newest output: several tokens that arrived together become one step."""
        out = await self.queue.get()
        while not out.finished and not self.queue.empty():
            out = self.queue.get_nowait()
        return out


def build_app(engine: Engine, model_name: str, default_max_tokens: int = 16) -> FastAPI:
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

    @app.get("/health")
    async def health():
        if engine._stopping:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "qrt",
                "max_model_len": engine.max_model_len}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        ids = body.prompt if isinstance(body.prompt, list) else engine.tokenizer(body.prompt).input_ids
        if any(t < 0 or t >= len(engine.tokenizer) for t in ids):
            raise HTTPError(400, f"prompt: token ids must be in [0, {len(engine.tokenizer)})", "prompt")
        prompt = body.prompt if isinstance(body.prompt, str) else None
        return await _serve(request, body, ids, prompt, ResponseFormat("completion", model_name), "prompt")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        tok = engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise HTTPError(400, "messages: this model has no chat template; use /v1/completions", "messages")
        msgs = [m.model_dump() for m in body.messages]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        return await _serve(request, body, list(ids), None, ResponseFormat("chat", model_name), "messages")

    async def _serve(request: Request, body, ids: list[int], prompt, fmt: ResponseFormat, prompt_field: str):
        try:
            params = body.sampling_params(default_max_tokens)
        except ValueError as e:
            raise HTTPError(400, str(e), None) from None
        outputs = _Outputs(asyncio.get_running_loop())
        try:
            rid = engine.add_request(ids, params, outputs.sink, prompt=prompt, request_id=fmt.id)
        except QueueFullError as e:
            raise HTTPError(429, f"server busy: {e}", None, "rate_limit_exceeded") from None
        except ValueError as e:
            raise HTTPError(400, str(e).replace("prompt:", f"{prompt_field}:", 1), prompt_field) from None
        except RuntimeError as e:
            raise HTTPError(503, str(e), None, "service_unavailable") from None
        if body.stream:
            return StreamingResponse(_stream(rid, outputs, fmt, body.include_usage), media_type="text/event-stream")
        out = await _wait(request, rid, outputs)
        if out is None:  # the client left; nobody reads this response
            return JSONResponse(error_body("client disconnected", None), status_code=499)
        if out.outputs[0].finish_reason == "error":
            raise HTTPError(500, f"generation failed: {out.error}", None, "server_error")
        return fmt.full(out)

    async def _wait(request: Request, rid: str, outputs: _Outputs) -> RequestOutput | None:
        next_check = time.monotonic() + 0.2
        try:
            while True:
                try:
                    out = await asyncio.wait_for(outputs.next(), timeout=0.2)
                    if out.finished:
                        return _record(out) if out.outputs[0].finish_reason != "abort" else None
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() >= next_check:  # every 0.2 s, whether tokens flow or not
                    next_check = time.monotonic() + 0.2
                    if await request.is_disconnected():
                        engine.abort(rid)
                        _record(await outputs.next())  # the abort's final output
                        return None
        except asyncio.CancelledError:
            engine.abort(rid)
            raise

    async def _stream(rid: str, outputs: _Outputs, fmt: ResponseFormat, include_usage: bool):
        sent, out = 0, None
        try:
            first = fmt.first_chunk()
            if first is not None:
                yield sse(first)
            while out is None or not out.finished:
                out = await outputs.next()
                c = out.outputs[0]
                if c.finish_reason == "error":
                    yield sse(error_body(f"generation failed: {out.error}", None, "server_error", 500))
                    break
                delta, sent = c.text[sent:], max(sent, len(c.text))
                if delta or out.finished:
                    yield sse(fmt.chunk(delta, c.finish_reason))
            if include_usage:
                yield sse(fmt.usage_chunk(out))
            yield sse("[DONE]")
        finally:  # also runs when the client disconnects (the generator is closed/cancelled)
            if out is None or not out.finished:
                engine.abort(rid)
                metrics.record("abort")
            else:
                _record(out)

    def _record(out: RequestOutput) -> RequestOutput:
        m = out.metrics
        ttft = None if m.first_token_time is None else m.first_token_time - m.arrival_time
        e2e = None if m.finished_time is None else m.finished_time - m.arrival_time
        metrics.record(out.outputs[0].finish_reason or "unknown", len(out.prompt_token_ids), out.num_generated,
                       ttft, e2e)
        return out

    return app
