"""A small TCP balancer for replica tests and benchmarks: one public port, N replicas.

Issue 10 §3: "behind one HTTP port". Round-robin per *connection* (as a layer-4 load
balancer does): each accepted connection is piped, byte for byte, to the next replica
that accepts a connection; a replica that refuses (it is down) is skipped, like a
balancer whose health check has marked it out. When a replica dies, the connections
piped to it are closed on the client side too, so a device sees a broken connection
and retransmits, exactly as behind a real balancer. TLS passes through untouched.

Loopback only. It stops by itself: after ``lifetime`` seconds, when its owner calls
:meth:`Balancer.stop` (or leaves the ``with`` block), and, run as a process
(``python -m tests.replicas.balancer``), when the process that started it is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import threading
from collections import Counter
from collections.abc import Sequence

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT = 2.0
CHUNK = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Balancer:
    """``with Balancer([port_a, port_b]) as lb:`` then connect to ``lb.port``."""

    def __init__(
        self, upstreams: Sequence[int], *, port: int | None = None, lifetime: float = 300.0
    ) -> None:
        if not upstreams:
            raise ValueError("a balancer needs at least one upstream port")
        self.upstreams = list(upstreams)
        self.port = port or _free_port()
        self.lifetime = lifetime
        #: Connections piped to each upstream port, and refused by it (it was down).
        self.piped: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- owner's side ---------------------------------------------------------------------
    def start(self) -> Balancer:
        self._thread = threading.Thread(target=self._main, name="tcp-balancer", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the balancer could not listen on {self.port}: {self._error}")
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended already (lifetime)
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(10)

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported to start() when it happens before ready
            self._error = exc
            self._ready.set()

    async def serve(self, parent: int | None = None) -> None:
        """Listen until stopped, the lifetime is over or ``parent`` (a pid) is gone."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, LOOPBACK, self.port)
        self._ready.set()
        deadline = self._loop.time() + self.lifetime
        try:
            while not self._stop.is_set() and self._loop.time() < deadline:
                if parent is not None and os.getppid() != parent:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(0.5, max(0.0, deadline - self._loop.time()))):
                        await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            upstream = await self._connect()
            if upstream is None:
                return  # every replica is down: the client sees the connection close
            up_reader, up_writer = upstream
            self._writers.add(up_writer)
            try:
                pipes = {
                    asyncio.create_task(_pipe(reader, up_writer)),
                    asyncio.create_task(_pipe(up_reader, writer)),
                }
                # Either side closing (or a replica killed) ends the pair.
                _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        # This connection's own order of preference (others interleave while it waits).
        first, count = self._next, len(self.upstreams)
        self._next += 1
        for k in range(count):
            port = self.upstreams[(first + k) % count]
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    upstream = await asyncio.open_connection(LOOPBACK, port)
            except (OSError, TimeoutError):
                self.refused[port] += 1
                continue
            self.piped[port] += 1
            return upstream
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="comma-separated replica ports")
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args()
    ports = [int(p) for p in args.upstream.split(",")]
    balancer = Balancer(ports, port=args.port, lifetime=args.lifetime)
    asyncio.run(balancer.serve(parent=os.getppid()))


if __name__ == "__main__":
    main()
