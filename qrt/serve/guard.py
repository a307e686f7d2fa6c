"""The outermost layer of the HTTP server (plain ASGI middleware, below every route):

- a body-size limit: a request body over `max_body_bytes` is answered 413 before it is read
  (by its Content-Length) or as soon as the bytes received pass the limit (chunked uploads);
- a catch-all: an exception nothing else handled becomes a 500 in the OpenAI error shape
  (never a plain-text traceback), logged with its traceback;
- every response is counted in /metrics by status class (2xx/4xx/5xx).

The body is read here, up to the limit, and replayed to the app; later `receive` calls go to
the client's connection, so disconnect detection keeps working.
"""
from __future__ import annotations

import json
import logging

from qrt.serve.metrics import ServerMetrics
from qrt.serve.protocol import error_body

log = logging.getLogger("qrt.serve")


class RequestGuard:
    def __init__(self, app, metrics: ServerMetrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status: list[int] = []

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)
        try:
            problem = _declared_length_problem(scope, self.max_body_bytes)
            body = None if problem else await _read_body(receive, self.max_body_bytes)
            if problem or body is None:
                return await _send_error(send_counted, *(problem or self._too_large()))
            await self.app(scope, _replay(body, receive), send_counted)
        except Exception as e:  # the catch-all: nothing escapes as a plain-text 500
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not status:
                await _send_error(send_counted, 500, f"internal error: {type(e).__name__}", "server_error")
        finally:
            self.metrics.record_http(status[0] if status else 500)

    def _too_large(self) -> tuple[int, str, str]:
        return 413, f"request body exceeds the limit of {self.max_body_bytes} bytes", "invalid_request_error"


def _declared_length_problem(scope, limit: int) -> tuple[int, str, str] | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            if not v.isdigit():
                return 400, f"invalid Content-Length header: {v[:40]!r}", "invalid_request_error"
            if int(v) > limit:
                return 413, f"request body of {int(v)} bytes exceeds the limit of {limit} bytes", \
                    "invalid_request_error"
    return None


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (nothing more is read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect when the client goes away
    return replayed


async def _send_error(send, status: int, message: str, kind: str) -> None:
    payload = json.dumps(error_body(message, None, kind, status)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
