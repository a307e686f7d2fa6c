"""Request handling between the HTTP layer and the Engine: admission, waiting or streaming,
disconnect detection and the per-request deadline (both abort the request and free its KV
blocks; a request past its deadline is answered 408, or ends its stream with an error event),
and metrics."""
from __future__ import annotations

import asyncio
import time

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from qrt.serve.engine import Engine, QueueFullError
from qrt.serve.metrics import ServerMetrics
from qrt.serve.outputs import RequestOutput
from qrt.serve.protocol import error_body
from qrt.serve.responses import ResponseFormat, sse

DISCONNECT_POLL_S = 0.2  # how often a waiting request checks that its client and the engine are still there
ABORT_WAIT_S = 5.0  # an abort's final output comes from the engine at once; bounded in case the engine is gone


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


class GenerationHandler:
    def __init__(self, engine: Engine, metrics: ServerMetrics, default_max_tokens: int,
                 request_timeout_s: float | None = None):
        self.engine, self.metrics, self.default_max_tokens = engine, metrics, default_max_tokens
        self.request_timeout_s = request_timeout_s

    def deadline(self) -> float:
        """time.monotonic() past which a request arriving now is aborted (inf: no deadline)."""
        return float("inf") if self.request_timeout_s is None else time.monotonic() + self.request_timeout_s

    async def serve(self, request: Request, body, ids: list[int], prompt, fmt: ResponseFormat, prompt_field: str,
                    deadline: float = float("inf")):
        """Admit the request, then answer with the full response or an SSE stream."""
        try:
            params = body.sampling_params(self.default_max_tokens)
        except ValueError as e:
            raise HTTPError(400, str(e), None) from None
        outputs = _Outputs(asyncio.get_running_loop())
        try:
            rid = self.engine.add_request(ids, params, outputs.sink, prompt=prompt, request_id=fmt.id)
        except QueueFullError as e:
            raise HTTPError(429, f"server busy: {e}", None, "rate_limit_exceeded") from None
        except ValueError as e:
            raise HTTPError(400, str(e).replace("prompt:", f"{prompt_field}:", 1), prompt_field) from None
        except RuntimeError as e:
            raise HTTPError(503, str(e), None, "service_unavailable") from None
        if body.stream:
            return StreamingResponse(self._stream(rid, outputs, fmt, body.include_usage, deadline),
                                     media_type="text/event-stream")
        out = await self._wait(request, rid, outputs, deadline)
        if out is None:  # the client left; nobody reads this response
            return JSONResponse(error_body("client disconnected", None), status_code=499)
        if out.outputs[0].finish_reason == "error":
            raise HTTPError(500, f"generation failed: {out.error}", None, "server_error")
        return fmt.full(out)

    async def _wait(self, request: Request, rid: str, outputs: _Outputs, deadline: float) -> RequestOutput | None:
        """The finished output, or None if the client disconnected (the request is aborted);
        HTTPError 408 past the deadline (the request is aborted)."""
        next_check = time.monotonic() + DISCONNECT_POLL_S
        try:
            while True:
                try:
                    out = await asyncio.wait_for(outputs.next(), timeout=DISCONNECT_POLL_S)
                    if out.finished:
                        return self._record(out) if out.outputs[0].finish_reason != "abort" else None
                except asyncio.TimeoutError:
                    self._check_engine(rid)
                if time.monotonic() >= deadline:
                    await self._abort(rid, outputs)
                    raise self._timeout_error()
                if time.monotonic() >= next_check:  # whether tokens flow or not
                    next_check = time.monotonic() + DISCONNECT_POLL_S
                    if await request.is_disconnected():
                        await self._abort(rid, outputs)
                        return None
        except asyncio.CancelledError:
            self.engine.abort(rid)
            raise

    async def _stream(self, rid: str, outputs: _Outputs, fmt: ResponseFormat, include_usage: bool, deadline: float):
        sent, out = 0, None
        try:
            first = fmt.first_chunk()
            if first is not None:
                yield sse(first)
            while out is None or not out.finished:
                if time.monotonic() >= deadline:
                    e = self._timeout_error()
                    yield sse(error_body(e.message, None, e.kind, e.status))
                    break
                try:
                    out = await asyncio.wait_for(outputs.next(), timeout=DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    try:
                        self._check_engine(rid)
                    except HTTPError as e:
                        yield sse(error_body(e.message, None, e.kind, e.status))
                        break
                    continue
                c = out.outputs[0]
                if c.finish_reason == "error":
                    yield sse(error_body(f"generation failed: {out.error}", None, "server_error", 500))
                    break
                delta, sent = c.text[sent:], max(sent, len(c.text))
                if delta or out.finished:
                    yield sse(fmt.chunk(delta, c.finish_reason))
            if include_usage and out is not None:
                yield sse(fmt.usage_chunk(out))
            yield sse("[DONE]")
        finally:  # also runs when the client disconnects (the generator is closed/cancelled)
            if out is None or not out.finished:
                self.engine.abort(rid)
                self.metrics.record("abort")
            else:
                self._record(out)

    def _timeout_error(self) -> HTTPError:
        return HTTPError(408, f"request exceeded the server's deadline of {self.request_timeout_s} s and was aborted",
                         None, "timeout")

    async def _abort(self, rid: str, outputs: _Outputs) -> None:
        """Abort the request and record its final output (bounded: the engine may be gone)."""
        self.engine.abort(rid)
        try:
            self._record(await asyncio.wait_for(outputs.next(), ABORT_WAIT_S))
        except asyncio.TimeoutError:
            self.metrics.record("abort")

    def _check_engine(self, rid: str) -> None:
        """HTTPError 503 (after aborting the request) if the engine can no longer finish it."""
        if self.engine.is_dead():
            self.engine.abort(rid)
            raise HTTPError(503, f"engine unavailable: {self.engine.health()}", None, "service_unavailable")

    def _record(self, out: RequestOutput) -> RequestOutput:
        m = out.metrics
        ttft = None if m.first_token_time is None else m.first_token_time - m.arrival_time
        e2e = None if m.finished_time is None else m.finished_time - m.arrival_time
        self.metrics.record(out.outputs[0].finish_reason or "unknown", len(out.prompt_token_ids), out.num_generated,
                            ttft, e2e)
        return out
