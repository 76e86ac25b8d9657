"""Refuse requests whose body length two parsers could read differently (RFC 9112 §6.1).

h11 already refuses two different Content-Length values and malformed chunking. A
request with both Content-Length and Transfer-Encoding, which h11 reads by its
Transfer-Encoding, is the classic request-smuggling shape: a proxy in front of us
might read it by its Content-Length. RFC 9112 §6.1 lets a server reject it and
requires closing the connection after answering it; we do both, in the
listener's error shape, without running the route.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from hatchway.server.edge.errors import ErrorShape

log = logging.getLogger("hatchway.http")


class FramingGuard:
    def __init__(self, app: ASGIApp, *, shape: ErrorShape) -> None:
        self.app = app
        self.shape = shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = [name for name, _ in scope["headers"]]
            lengths = names.count(b"content-length")
            if lengths > 1 or (lengths and b"transfer-encoding" in names):
                client = scope.get("client")
                log.info(
                    "ambiguous request framing refused",
                    extra={"path": scope["path"], "client": client[0] if client else None},
                )
                response = self.shape.response(400, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
