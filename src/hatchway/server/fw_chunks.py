"""``GET /fw/<release>/<index>``: encrypted firmware chunks on the plain listener (issue 9).

Figure 6's image transfer. Chunks are AES-256-GCM under a content key only the
offered devices can unwrap, and each is checked against the signed manifest, so
this endpoint needs no authentication: the plain listener serves ciphertext to
anyone, like a CDN would. A pure ASGI component in front of the app (as
``MessageFastPath`` is): per chunk it is one cached release lookup and one bounded
``pread`` of the open chunk file, never the whole image in memory.

The sealed chunks live in the store (``firmware_chunks``), so every replica can
serve every release. Each replica keeps a file cache, ``<data dir>/firmware/<release>.chunks``:
the first request for a release it has no file for copies the chunks from the store
into that file (a worker thread, once per release and process, written atomically),
and from then on the hot path is the ``pread`` alone. The store holds the sealed
bytes, IVs included, so every replica serves byte-identical chunks.

* ``Cache-Control: public, max-age=31536000, immutable`` and an ``ETag``: a release's
  chunks never change (a new image is a new release id), so any cache may keep them.
* Unknown release, index out of range, a non-canonical index (``007``): the same
  404 with the listener's one uniform body, so it is no oracle for which releases exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from hatchway.firmware.chunkfile import chunk_file_size, chunk_path, sealed_span, write_chunk_file
from hatchway.firmware.manifest import MAX_CHUNKS
from hatchway.firmware.wire import RELEASE_ID
from hatchway.flows.firmware import CHUNK_PATH
from hatchway.runtime import Random, system_random
from hatchway.server.context import ServerContext
from hatchway.server.edge import UNIFORM_ERROR
from hatchway.store.firmware_records import ReleaseRecord

__all__ = ["FirmwareChunks", "parse_chunk_path"]

log = logging.getLogger("hatchway.firmware")

_CACHE_SIZE = 64  # releases whose chunk file is kept open
_IMMUTABLE = b"public, max-age=31536000, immutable"


def parse_chunk_path(path: str) -> tuple[str, int] | None:
    """``/fw/<release>/<index>`` as ``(release, index)``, or None; one spelling per chunk."""
    if not path.startswith(CHUNK_PATH):
        return None
    release, sep, index = path[len(CHUNK_PATH) :].partition("/")
    if not sep or RELEASE_ID.fullmatch(release) is None:
        return None
    if not (index.isascii() and index.isdigit()) or len(index) > 4:
        return None
    if index != "0" and index.startswith("0"):
        return None
    number = int(index)
    return (release, number) if number < MAX_CHUNKS else None


class FirmwareChunks:
    """Serves ``GET``/``HEAD`` under ``/fw/``; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, ctx: ServerContext, *, random: Random = system_random) -> None:
        self.app = app
        self.ctx = ctx
        self._random = random  # names the cache file's temporary copy
        self._releases: OrderedDict[str, _Release] = OrderedDict()
        self._lock = threading.Lock()
        self._filling: dict[str, asyncio.Lock] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(CHUNK_PATH)
        ):
            await self.app(scope, receive, send)
            return
        parsed = parse_chunk_path(scope["path"])
        found = None if parsed is None else await self._chunk(*parsed)
        if found is None:
            await _respond(send, 404, [(b"content-type", b"application/json")], UNIFORM_ERROR)
            return
        etag, data = found
        headers = [(b"cache-control", _IMMUTABLE), (b"etag", etag)]
        if _matches(scope, etag):
            await _respond(send, 304, headers, b"", head=True)
            return
        headers += [
            (b"content-type", b"application/octet-stream"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await _respond(send, 200, headers, data, head=scope["method"] == "HEAD")

    async def _chunk(self, release_id: str, index: int) -> tuple[bytes, bytes] | None:
        info = await self._release(release_id)
        if info is None or index >= info.count:
            return None
        try:
            offset, length = sealed_span(info.size, index)
            # One bounded pread on the loop: 64 KiB from the page cache costs less than
            # the hand-off to a worker thread (measured in bench/bench_firmware.py).
            data = os.pread(info.fd, length, offset)
        except OSError:
            log.exception("firmware chunk file of %s unreadable", release_id)
            return None
        if len(data) != length:
            log.error("firmware chunk file of %s is shorter than its release", release_id)
            return None
        return b'"' + info.tag + b"-" + str(index).encode() + b'"', data

    async def _release(self, release_id: str) -> _Release | None:
        with self._lock:
            hit = self._releases.get(release_id)
            if hit is not None:
                self._releases.move_to_end(release_id)
                return hit
        record = await asyncio.to_thread(self.ctx.store.get_release, release_id)
        if record is None:
            return None  # not cached: a release published later must become visible
        # One fill per release at a time; the locks are few (one per published
        # release ever asked for), so they are kept.
        async with self._filling.setdefault(release_id, asyncio.Lock()):
            with self._lock:
                hit = self._releases.get(release_id)
            if hit is not None:  # the request that held the lock before opened it
                return hit
            fd = await asyncio.to_thread(self._open_or_fill, record)
            if fd is None:
                return None
            info = _Release(record.size, record.chunk_count, record.sha256.hex()[:32].encode(), fd)
            with self._lock:
                self._releases[release_id] = info
                while len(self._releases) > _CACHE_SIZE:
                    _, evicted = self._releases.popitem(last=False)
                    os.close(evicted.fd)
            return info

    def _open_or_fill(self, record: ReleaseRecord) -> int | None:
        """The open cache file of ``record``, filled from the store first if it is
        missing or not the size the release says (worker thread)."""
        path = chunk_path(self.ctx.settings.data_dir, record.release_id)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("firmware chunk file of %s unreadable", record.release_id)
            return None
        else:
            if os.fstat(fd).st_size == chunk_file_size(record.size):
                return fd
            os.close(fd)
            log.warning("firmware chunk file of %s has the wrong size; refilled", record.release_id)
        try:
            sealed = self.ctx.store.sealed_chunks(record.release_id)
            write_chunk_file(path, sealed, record.size, self._random)
            return os.open(path, flags)
        except (OSError, ValueError):
            log.exception("firmware chunks of %s could not be cached", record.release_id)
            return None


@dataclass(frozen=True, slots=True)
class _Release:
    """What serving a release's chunks needs; the chunk file stays open while cached."""

    size: int
    count: int
    tag: bytes  # ETag prefix: the image digest (a release's chunks never change)
    fd: int


def _matches(scope: Scope, etag: bytes) -> bool:
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return any(t.strip() in (etag, b"*") for t in value.split(b","))
    return False


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head: bool = False
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
