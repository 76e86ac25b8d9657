"""Shared by the HTTP attack tests: an in-process ASGI client, a hostile sealer, and an
ERROR-log trap. Nothing here stands in for a real component: the apps, the message
service and the store are the real ones."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from hatchway.msgsec import _jose
from hatchway.msgsec._codec import b64e
from hatchway.msgsec.keys import SigningKey
from hatchway.runtime import system_random
from hatchway.server.context import ServerContext


class AsgiClient:
    """A synchronous client that calls an ASGI app in process (no sockets).

    App exceptions are not re-raised: the test sees the response a socket peer
    would see (uvicorn turns an escaped exception into a 500).
    """

    def __init__(self, app: Any, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.base_url = base_url
        self.headers = headers or {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url=self.base_url, headers=self.headers
            ) as client:
                response = await client.request(method, path, **kwargs)
                await response.aread()
                return response

        return asyncio.run(go())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


class ErrorTrap(logging.Handler):
    """Collects every ERROR (or worse) record logged anywhere while installed."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


@contextmanager
def error_trap() -> Iterator[ErrorTrap]:
    trap = ErrorTrap()
    root = logging.getLogger()
    root.addHandler(trap)
    try:
        yield trap
    finally:
        root.removeHandler(trap)


def seal_raw(
    ctx: ServerContext,
    signer: SigningKey,
    *,
    header: bytes,
    claims: bytes,
) -> bytes:
    """A JWE to the server around a JWS with *exactly* these header and claim bytes.

    ``seal`` refuses to write most hostile texts (a lone surrogate cannot be encoded),
    so the layers are built from the raw bytes here.
    """
    alg = json.loads(header)["alg"]
    inner = _jose.jws_compact(b64e(header), alg, claims, signer.key)
    server = ctx.identity.decryption_key.public()
    ephemeral = _jose.ephemeral(server.crv, system_random)
    return _jose.jwe_encode(
        "ECDH-ES", "A256GCM", server.kid, server.crv, inner, server.key, ephemeral, system_random
    )
