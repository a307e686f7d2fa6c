"""The OpenAPI document says what the server sends: errors are 400 (never FastAPI's default
422) and the other statuses the server uses, all in OpenAI's error shape; generation routes
answer JSON or, with "stream": true, server-sent events; /metrics is Prometheus text."""
from __future__ import annotations

from fastapi import FastAPI

from qrt.serve.protocol import ErrorResponse

_ERRORS = {400: "Invalid request (the message names the field).",
           408: "The request passed the server's deadline and was aborted.",
           413: "The request body is over the server's size limit.",
           429: "The engine's queue is full; retry later.",
           500: "The engine failed this request.",
           503: "The engine is down or the server is shutting down."}

GENERATION_RESPONSES = {
    200: {"description": "The completion (JSON), or with \"stream\": true a stream of server-sent events.",
          "content": {"text/event-stream": {}}},  # events are `data: <chunk JSON>` lines, then `data: [DONE]`
    **{code: {"model": ErrorResponse, "description": why} for code, why in _ERRORS.items()},
}

HEALTH_RESPONSES = {503: {"description": "The engine cannot serve.",
                          "content": {"application/json": {"schema": {
                              "type": "object", "properties": {"status": {"type": "string"},
                                                               "reason": {"type": "string"}}}}}}}


def install_openapi(app: FastAPI) -> None:
    """Replace app.openapi with one that drops FastAPI's 422 responses (the server answers
    validation errors with 400, declared on each route) and their unused schemas."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc
    app.openapi = openapi
