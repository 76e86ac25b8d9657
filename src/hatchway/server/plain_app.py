"""The plain-HTTP listener: sealed messages (``application/jose``) with no TLS.

Claim step 5: the transport carries only compact JWE tokens; confidentiality and
integrity come from the message itself. Every failure, whatever its cause, is the same
400 with the same body, so a response is never an oracle.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hatchway.errors import InvalidMessage
from hatchway.flows.enrolment import MESSAGE_PATH
from hatchway.server.context import ServerContext
from hatchway.server.logs import RequestLog

JOSE = "application/jose"
UNIFORM_ERROR = b'{"error":"invalid_message"}'


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

    Same checks, same answers as the FastAPI route above. At 32 connections py-spy
    (GIL samples) put a quarter of the server's CPU per message in FastAPI's routing,
    dependency and exception layers around this one call, so the plain listener, whose
    whole job is this endpoint, skips them.
    """

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app = app
        self.ctx = ctx
        self.limit = ctx.settings.max_message_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MESSAGE_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            reply = await self._reply(scope, receive)
        except BaseException:
            await _send(send, 500, b"text/plain; charset=utf-8", b"Internal Server Error")
            raise  # logged by uvicorn, as for any other route
        if reply is None:
            await _send(send, 400, b"application/json", UNIFORM_ERROR)
        else:
            await _send(send, 200, JOSE.encode(), reply)

    async def _reply(self, scope: Scope, receive: Receive) -> bytes | None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return None
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != JOSE.encode():
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            body += message.get("body", b"")
            if len(body) > self.limit:
                return None
            if not message.get("more_body", False):
                break
        try:
            return await self.ctx.messages.handle_async(bytes(body))
        except InvalidMessage:
            return None


async def _send(send: Send, status: int, media_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_plain_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(title="hatchway messages", docs_url=None, redoc_url=None, openapi_url=None)
    add_message_route(app, ctx)

    @app.get("/healthz")
    async def health() -> JSONResponse:
        body = {"status": "ok"}
        if ctx.mqtt_connected is not None:
            body["mqtt"] = "connected" if ctx.mqtt_connected.is_set() else "connecting"
        return JSONResponse(body)

    fast = MessageFastPath(app, ctx)
    return RequestLog(fast, listener="plain")  # type: ignore[return-value]
