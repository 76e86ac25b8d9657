"""Shared by the HTTP attack tests: an in-process ASGI client, a hostile sealer, and an
ERROR-log trap. Nothing here stands in for a real component: the apps, the message
service and the store are the real ones."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from hatchway.msgsec import _jose
from hatchway.msgsec._codec import b64e
from hatchway.msgsec.keys import EncryptionKey, SigningKey
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
    """A JWE to ``ctx``'s server around a JWS with *exactly* these header and claim bytes."""
    return seal_to(ctx.identity.decryption_key.public(), signer, header=header, claims=claims)


def seal_to(server: EncryptionKey, signer: SigningKey, *, header: bytes, claims: bytes) -> bytes:
    """A JWE to ``server`` around a JWS with *exactly* these header and claim bytes.

    ``seal`` refuses to write most hostile texts (a lone surrogate cannot be encoded),
    so the layers are built from the raw bytes here.
    """
    alg = json.loads(header)["alg"]
    inner = _jose.jws_compact(b64e(header), alg, claims, signer.key)
    ephemeral = _jose.ephemeral(server.crv, system_random)
    return _jose.jwe_encode(
        "ECDH-ES", "A256GCM", server.kid, server.crv, inner, server.key, ephemeral, system_random
    )


class LoopClient:
    """Like :class:`AsgiClient`, but on one event loop (in a thread) for its lifetime.

    Routes that start background tasks (the login decision feed) keep them running
    between requests, as under uvicorn. ``close`` cancels what is left.
    """

    def __init__(self, app: Any, base_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self._run(self._open(app, base_url))

    @staticmethod
    async def _open(app: Any, base_url: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url=base_url)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            self.client.cookies.clear()  # each request says all it sends: reproducible
            response = await self.client.request(method, url, **kwargs)
            await response.aread()
            return response

        result: httpx.Response = self._run(go())
        return result

    def close(self) -> None:
        async def shutdown() -> None:
            await self.client.aclose()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self._run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
