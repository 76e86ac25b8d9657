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


class HttpTransport:
    """Plain HTTP with keep-alive: no TLS, the message protects itself."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._client = httpx.Client(timeout=timeout, http2=False)

    def __call__(self, url: str, token: bytes) -> bytes:
        try:
            response = self._client.post(
                url, content=token, headers={"content-type": "application/jose"}
            )
        except httpx.TransportError as exc:
            raise TransportError(f"could not deliver to {url}: {exc}") from exc
        if response.status_code == 400:
            raise MessageRejected("the server rejected the message")
        if response.status_code != 200:
            raise TransportError(f"{url} answered HTTP {response.status_code}")
        return response.content

    def close(self) -> None:
        self._client.close()
