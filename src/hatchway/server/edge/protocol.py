"""uvicorn's h11 protocol with a request-head deadline, a body backstop and a connection cap.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) but not one that
is sending its request slowly: with no data it never arms a timer on a new
connection, and every byte received cancels the keep-alive timer. 100 connections
that dribble partial heads or bodies were all still open after 60 s (issue 7 part 2
item 5). This subclass adds, per connection:

* a head deadline: from the connection (or the first byte of a later request) the
  whole request head must arrive within ``Limits.header_timeout``, else a 408 in the
  listener's error shape and close (RFC 9110 §15.5.9);
* a body backstop: once the head is in, the body must be complete within
  ``Limits.body_timeout`` plus a grace second, else close. ``BodyDeadline`` answers
  408 first when the app is reading; this covers bodies no one reads (an early
  refusal whose client keeps sending);
* a connection cap: past ``Limits.max_connections`` open connections a new one gets
  a 503 at once and is closed, before it costs a request task. (uvicorn's own
  ``limit_concurrency`` answers only once a head has arrived, in plain text.)

h11 (not httptools) on purpose: it bounds the head's size
(``h11_max_incomplete_event_size``), and its states say exactly where a request is.
Malformed HTTP (two Content-Lengths, CL with TE, a garbage request line) gets the
listener's JSON error instead of uvicorn's text, through ``send_400_response``.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from hatchway.server.edge.errors import ErrorShape

log = logging.getLogger("hatchway.http")

#: Largest request head h11 buffers (it answers 400 beyond it).
MAX_HEAD_BYTES = 16 * 1024
#: Seconds an idle keep-alive connection stays open between requests.
KEEP_ALIVE = 5
#: Extra time the body backstop gives ``BodyDeadline`` to answer first.
BODY_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000


class GuardedH11Protocol(H11Protocol):
    limits: ClassVar[Limits] = Limits()
    shape: ClassVar[ErrorShape] = ErrorShape()
    listener: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._head_seen = 0  # bytes of the current request head so far
        self._head_tail = b""  # its last 3 bytes, to find a CRLFCRLF split across reads

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refused = True
            log.warning(
                "connection refused: %d open connections is the cap",
                self.limits.max_connections,
                extra={"listener": self.listener, "client": self._peer()},
            )
            self._answer_and_close(503)
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: read nothing
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._refused = True
            log.info(
                "request head larger than %d bytes refused",
                MAX_HEAD_BYTES,
                extra={"listener": self.listener, "client": self._peer()},
            )
            self._answer_and_close(431)
            return
        super().data_received(data)
        self._track(data_arrived=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        self._cancel_body()
        super().connection_lost(exc)

    # -- uvicorn hooks -------------------------------------------------------------------
    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track(data_arrived=False)

    def _unsupported_upgrade_warning(self) -> None:
        # Neither listener serves WebSockets (ws="none"); uvicorn would log two
        # warnings per request, one telling the operator to install a library.
        log.info("Upgrade header ignored", extra={"listener": self.listener})

    def send_400_response(self, msg: str) -> None:
        # h11 raised RemoteProtocolError: the request cannot be parsed, so nothing of
        # it is logged but the fact. uvicorn has already logged a warning line.
        log.info(
            "malformed HTTP request refused",
            extra={"listener": self.listener, "client": self._peer()},
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # Broken mid-body (bad chunking): the route still waiting on receive()
            # sees a disconnect, and its answer goes nowhere, instead of hitting a
            # connection h11 has closed (an ERROR in uvicorn's own handler).
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        body = self.shape.body(400)
        headers = [
            *((k.encode(), v.encode()) for k, v in self.shape.headers.items()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            start = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
            out = (self.conn.send(start) or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            out += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # a response was already under way: just close
            out = b""
        self._cancel_head()
        self._cancel_body()
        if out and not self.transport.is_closing():
            self.transport.write(out)
        self.transport.close()

    def _head_too_large(self, data: bytes) -> bool:
        """Count the head's bytes ourselves: h11's ``max_incomplete_event_size`` only
        applies while the head is incomplete, so a large head that arrives in one read
        (asyncio reads up to 256 KiB) would pass it."""
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._head_seen += len(data)
            self._head_tail = window[-3:]
            return self._head_seen > MAX_HEAD_BYTES
        size = self._head_seen + end + 4 - len(self._head_tail)
        self._head_seen, self._head_tail = 0, b""
        return size > MAX_HEAD_BYTES

    # -- deadlines -----------------------------------------------------------------------
    def _track(self, *, data_arrived: bool) -> None:
        """Arm or cancel the timers for where the peer's request now is (h11 state)."""
        if self.transport.is_closing():
            self._cancel_head()
            self._cancel_body()
            return
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._head_seen, self._head_tail = 0, b""
        if state is h11.IDLE:
            self._cancel_body()
            if not data_arrived:
                self._cancel_head()  # between requests: the keep-alive timer rules
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_expired
                )
        elif state is h11.SEND_BODY:
            self._cancel_head()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout + BODY_GRACE, self._body_expired
                )
        else:
            self._cancel_head()
            self._cancel_body()

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.info(
            "request head not received in %ss; connection closed",
            self.limits.header_timeout,
            extra={"listener": self.listener, "client": self._peer()},
        )
        self._answer_and_close(408)

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        log.info(
            "request body not received in %ss; connection closed",
            self.limits.body_timeout,
            extra={"listener": self.listener, "client": self._peer()},
        )
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's later sends go nowhere
            self.cycle.message_event.set()
        self.transport.close()

    def _answer_and_close(self, status: int) -> None:
        """Write a whole response outside h11 (no request was parsed), then close.

        Only called while no response is under way (the peer's state is IDLE, or the
        connection has just been made), so the bytes cannot interleave with another.
        """
        self._cancel_head()
        body = self.shape.body(status)
        phrase = http.HTTPStatus(status).phrase
        head = [f"HTTP/1.1 {status} {phrase}"]
        head += [f"{k}: {v}" for k, v in self.shape.headers.items()]
        head += [
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.transport.close()

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _peer(self) -> str | None:
        return self.client[0] if self.client else None


def guarded_protocol(limits: Limits, shape: ErrorShape, listener: str) -> type[H11Protocol]:
    """The protocol class for one listener (uvicorn's ``http=`` takes a class)."""
    attrs = {"limits": limits, "shape": shape, "listener": listener}
    return type(f"GuardedH11Protocol_{listener}", (GuardedH11Protocol,), attrs)


CreateServer = Callable[..., Awaitable[asyncio.AbstractServer]]


def bound_tls_handshakes(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Give every TLS listener created on ``loop`` a handshake deadline.

    A connection still in its TLS handshake has no protocol yet, so neither the
    head deadline nor the cap sees it; asyncio's default bound is 60 s, and uvicorn
    passes no ``ssl_handshake_timeout``. Installed once per loop, before the
    listeners start; plain listeners are untouched.
    """
    original: CreateServer = loop.create_server
    if getattr(original, "_hatchway_bounded", False):
        return

    @functools.wraps(original)
    async def create_server(*args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", seconds)
        return await original(*args, **kwargs)

    create_server._hatchway_bounded = True  # type: ignore[attr-defined]
    loop.create_server = create_server  # type: ignore[method-assign,assignment]
