"""The plain-HTTP listener: sealed messages (``application/jose``) with no TLS.

Claim step 5: the transport carries only compact JWE tokens; confidentiality and
integrity come from the message itself. Every failure, whatever its cause, is the same
400 with the same body, so a response is never an oracle; every other error this
listener gives (404, 405, 408, malformed HTTP) has that same body too (``edge``).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hatchway.errors import InvalidMessage
from hatchway.flows.enrolment import MESSAGE_PATH
from hatchway.server.context import ServerContext
from hatchway.server.edge import PLAIN_SHAPE, UNIFORM_ERROR, install_edge
from hatchway.server.edge.errors import CLIENT_CLOSED
from hatchway.server.edge.framing import FramingGuard
from hatchway.server.fw_chunks import FirmwareChunks
from hatchway.server.logs import RequestLog
from hatchway.server.pki_routes import add_crl_route

__all__ = ["JOSE", "UNIFORM_ERROR", "add_message_route", "build_plain_app", "uniform_error"]

JOSE = "application/jose"
log = logging.getLogger("hatchway.http")


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
            reply = await ctx.messages.handle_async(bytes(body))
        except InvalidMessage:
            return uniform_error()
        return Response(reply, media_type=JOSE)


class MessageFastPath:
    """``POST /m`` straight to the message service, as pure ASGI; everything else to ``app``.

    Same checks, same answers as the FastAPI route above, and the same edge rules as
    every other route (``edge``): the body deadline (408), a client that leaves
    mid-body (499 in the access log, one info line), the uniform error body. At 32
    connections py-spy (GIL samples) put a quarter of the server's CPU per message in
    FastAPI's routing, dependency and exception layers around this one call, so the
    plain listener, whose whole job is this endpoint, skips them.
    """

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app = app
        self.ctx = ctx
        self.limit = ctx.settings.max_message_size
        self.body_timeout = ctx.settings.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MESSAGE_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            status, reply = await self._reply(scope, receive)
        except BaseException:
            await _send(send, 500, b"application/json", UNIFORM_ERROR, close=True)
            raise  # logged by uvicorn, as for any other route
        if reply is None:
            await _send(send, status, b"application/json", UNIFORM_ERROR, close=status != 400)
        else:
            await _send(send, 200, JOSE.encode(), reply)

    async def _reply(self, scope: Scope, receive: Receive) -> tuple[int, bytes | None]:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return 400, None
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != JOSE.encode():
            return 400, None
        body = bytearray()
        client = scope.get("client")
        try:
            # One deadline for the whole body, counted from the request head.
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        log.info(
                            "client closed the connection mid-request",
                            extra={"path": MESSAGE_PATH, "client": client[0] if client else None},
                        )
                        return CLIENT_CLOSED, None
                    body += message.get("body", b"")
                    if len(body) > self.limit:
                        return 400, None
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            log.info(
                "request body not received in time",
                extra={"path": MESSAGE_PATH, "client": client[0] if client else None},
            )
            return 408, None
        try:
            return 200, await self.ctx.messages.handle_async(bytes(body))
        except InvalidMessage:
            return 400, None


async def _send(
    send: Send, status: int, media_type: bytes, body: bytes, *, close: bool = False
) -> None:
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_plain_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(title="hatchway messages", docs_url=None, redoc_url=None, openapi_url=None)
    install_edge(app, PLAIN_SHAPE, body_timeout=ctx.settings.body_timeout)
    add_message_route(app, ctx)
    add_crl_route(app, ctx)

    @app.get("/healthz")
    async def health() -> JSONResponse:
        body = {"status": "ok"}
        if ctx.mqtt_connected is not None:
            body["mqtt"] = "connected" if ctx.mqtt_connected.is_set() else "connecting"
        return JSONResponse(body)

    # The framing check runs before the fast path too: nothing looks at an ambiguous
    # request (two Content-Lengths, Content-Length with Transfer-Encoding).
    # Firmware chunks (GET /fw/...) are served beside the message fast path.
    fast = FramingGuard(MessageFastPath(FirmwareChunks(app, ctx), ctx), shape=PLAIN_SHAPE)
    return RequestLog(fast, listener="plain")  # type: ignore[return-value]
