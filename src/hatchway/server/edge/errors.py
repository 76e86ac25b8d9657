"""One error shape per listener, for routing, validation, disconnects and crashes.

* plain listener (``application/jose`` messages): every error body is exactly
  ``{"error":"invalid_message"}`` (README, "Sealed messages"): no status but
  400 ever depends on a message's content, and the body never says why;
* HTTPS listener: RFC 6749 §5.2-style ``{"error": code, "error_description": text}``
  with the security headers every other HTTPS answer carries.

FastAPI's defaults (``{"detail": "Not Found"}``, 422 validation bodies, starlette's
text 500) are replaced here, and the h11 protocol (``protocol.py``) uses the same
shape for the answers it writes itself (malformed HTTP, timeouts, the cap).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from hatchway.server.edge.deadline import BodyTimeout

log = logging.getLogger("hatchway.http")

UNIFORM_ERROR = b'{"error":"invalid_message"}'
#: nginx's "client closed request": only ever seen in our access log.
CLIENT_CLOSED = 499

#: HTTP status → (error code, description) for the answers no route chooses.
CODES: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        400: ("invalid_request", "malformed HTTP request"),
        404: ("not_found", "no such endpoint"),
        405: ("method_not_allowed", "method not allowed on this endpoint"),
        408: ("request_timeout", "the request was not received in time"),
        413: ("invalid_request", "request too large"),
        431: ("invalid_request", "request header fields too large"),
        CLIENT_CLOSED: ("invalid_request", "client closed the connection"),
        500: ("server_error", "internal error"),
        503: ("temporarily_unavailable", "too many connections; retry later"),
    }
)


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """How one listener spells an error. ``uniform``: the one body it ever sends."""

    uniform: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self, status: int, code: str = "", description: str = "") -> bytes:
        if self.uniform is not None:
            return self.uniform
        default_code, default_text = CODES.get(status, ("invalid_request", ""))
        out = {"error": code or default_code}
        text = description or default_text
        if text:
            out["error_description"] = text
        return orjson.dumps(out)

    def response(
        self,
        status: int,
        code: str = "",
        description: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        merged = {**self.headers, **(headers or {})}
        return Response(
            self.body(status, code, description),
            status_code=status,
            media_type="application/json",
            headers=merged,
        )


PLAIN_SHAPE = ErrorShape(uniform=UNIFORM_ERROR)
HTTPS_SHAPE = ErrorShape(
    headers=MappingProxyType(
        {
            "Strict-Transport-Security": "max-age=31536000",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        }
    )
)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def install_error_handlers(app: FastAPI, shape: ErrorShape) -> None:
    """Replace FastAPI's and starlette's error bodies with ``shape`` on ``app``."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it
        # Keep Allow on a 405 (RFC 9110 §15.5.6); drop anything describing the app.
        keep = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return shape.response(exc.status_code, headers=keep)

    async def invalid(request: Request, exc: Exception) -> Response:
        log.info("request refused by validation", extra={"path": request.url.path})
        return shape.response(400, "invalid_request", "malformed request parameters")

    async def disconnected(request: Request, exc: Exception) -> Response:
        # Cheap for anyone to cause, so one info line and no traceback. Nobody
        # reads this answer; it gives the access log a status that says what happened.
        log.info(
            "client closed the connection mid-request",
            extra={"path": request.url.path, "client": _client(request)},
        )
        return shape.response(CLIENT_CLOSED, headers={"Connection": "close"})

    async def too_slow(request: Request, exc: Exception) -> Response:
        log.info(
            "request body not received in time",
            extra={"path": request.url.path, "client": _client(request)},
        )
        return shape.response(408, headers={"Connection": "close"})

    async def crashed(request: Request, exc: Exception) -> Response:
        # starlette logs the traceback (a real bug); the peer learns nothing of it.
        return shape.response(500, headers={"Connection": "close"})

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(BodyTimeout, too_slow)
    app.add_exception_handler(Exception, crashed)
