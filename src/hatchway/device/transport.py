"""The device's one narrow I/O callable: POST a sealed token, get the sealed reply.

Anything that delivers bytes can stand in (MQTT later; an in-process ASGI transport in
tests). Failures are split by whether the message may have been delivered, because
that decides whether the SDK may retry it.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from hatchway.errors import HatchwayError


class TransportError(HatchwayError):
    """The message may not have reached the server; it is safe to retry (same ``mid``)."""


class MessageRejected(HatchwayError):
    """The server answered with its uniform refusal; retrying the same message is useless."""


class Transport(Protocol):
    def __call__(self, url: str, token: bytes) -> bytes: ...


#: Replies are small sealed tokens; anyone on the plain-HTTP path could otherwise make
#: the device buffer an endless body.
MAX_REPLY_SIZE = 256 * 1024


class HttpTransport:
    """Plain HTTP with keep-alive: no TLS, the message protects itself."""

    def __init__(self, *, timeout: float = 10.0, max_reply: int = MAX_REPLY_SIZE) -> None:
        self._client = httpx.Client(timeout=timeout, http2=False)
        self._max_reply = max_reply

    def __call__(self, url: str, token: bytes) -> bytes:
        headers = {"content-type": "application/jose"}
        try:
            with self._client.stream("POST", url, content=token, headers=headers) as response:
                if response.status_code == 400:
                    raise MessageRejected("the server rejected the message")
                if response.status_code != 200:
                    raise TransportError(f"{url} answered HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self._max_reply:
                        # Safe to retry: the retransmission keeps the mid, so the server
                        # stores the message once whatever happened to this reply.
                        raise TransportError(f"{url} sent a reply over {self._max_reply} bytes")
                return bytes(body)
        except httpx.TransportError as exc:
            raise TransportError(f"could not deliver to {url}: {exc}") from exc

    def close(self) -> None:
        self._client.close()
