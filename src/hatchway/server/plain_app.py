"""The plain-HTTP listener: sealed messages (``application/jose``) with no TLS.

Claim step 5: the transport carries only compact JWE tokens; confidentiality and
integrity come from the message itself. Every failure, whatever its cause, is the same
400 with the same body, so a response is never an oracle; every other error this
listener gives (404, 405, 408, malformed HTTP) has that same body too (``edge``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hatchway.errors import InvalidMessage
from hatchway.flows.enrolment import MESSAGE_PATH
from hatchway.server.context import ServerContext
from hatchway.server.edge import PLAIN_SHAPE, UNIFORM_ERROR, install_edge
from hatchway.server.logs import RequestLog

__all__ = ["JOSE", "UNIFORM_ERROR", "add_message_route", "build_plain_app", "uniform_error"]

JOSE = "application/jose"


def uniform_error() -> Response:
    return Response(UNIFORM_ERROR, status_code=400, media_type="application/json")


def add_message_route(app: FastAPI, ctx: ServerContext) -> None:
    """Mount the sealed-message endpoint. The plain listener is its home; the HTTPS
    listener carries it too, for devices that keep TLS anyway (and as the benchmark's
    TLS-per-message baseline)."""
    limit = ctx.settings.max_message_size

    @app.post(MESSAGE_PATH)
    async def message(request: Request) -> Response:
        # Cap the size while reading, before anything is parsed.
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > limit:
            return uniform_error()
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != JOSE:
            return uniform_error()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return uniform_error()
        try:
            reply = await run_in_threadpool(ctx.messages.handle, bytes(body))
        except InvalidMessage:
            return uniform_error()
        return Response(reply, media_type=JOSE)


def build_plain_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(title="hatchway messages", docs_url=None, redoc_url=None, openapi_url=None)
    install_edge(app, PLAIN_SHAPE, body_timeout=ctx.settings.body_timeout)
    add_message_route(app, ctx)

    @app.get("/healthz")
    async def health() -> JSONResponse:
        body = {"status": "ok"}
        if ctx.mqtt_connected is not None:
            body["mqtt"] = "connected" if ctx.mqtt_connected.is_set() else "connecting"
        return JSONResponse(body)

    return RequestLog(app, listener="plain")  # type: ignore[return-value]
