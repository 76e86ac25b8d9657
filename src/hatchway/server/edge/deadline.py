"""A deadline on reading the request body (issue 7 part 2 item 5).

uvicorn waits for body bytes as long as the client keeps the connection open. This
ASGI middleware bounds every ``receive()`` the app makes until the body is complete
by one deadline counted from when the request head arrived; past it the app sees
:class:`BodyTimeout`, which ``errors.install_error_handlers`` answers with a 408 and
``Connection: close``. After the body, ``receive()`` is left alone: it then only
reports a disconnect, which a route may wait on as long as it likes.

The h11 protocol (``protocol.py``) closes, a little later, connections whose body
the app never reads; this middleware gives the ones it does read a proper answer.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTimeout(Exception):
    """The client did not send the request body within the deadline."""


class BodyDeadline:
    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False

        async def bounded() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, bounded, send)
