"""The workers' shared plain-listener socket (``serve --workers N``).

Regression: the socket was created with proto 0, so asyncio did not set TCP_NODELAY on
the connections it accepted, and Nagle held each response's second write until the
client's delayed ACK: every keep-alive request to a worker took about 44 ms.
"""

from __future__ import annotations

import asyncio
import socket

from hatchway.server.run import shared_socket


def test_connections_accepted_on_the_shared_socket_have_nodelay() -> None:
    async def scenario() -> tuple[int, int]:
        listener = shared_socket("127.0.0.1", 0)
        port = listener.getsockname()[1]
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(seen, timeout=5)
            writer.close()
        finally:
            server.close()
            await server.wait_closed()
        return nodelay, listener.proto

    nodelay, proto = asyncio.run(scenario())
    assert proto == socket.IPPROTO_TCP
    assert nodelay != 0


def test_two_shared_sockets_bind_the_same_port() -> None:
    first = shared_socket("127.0.0.1", 0)
    try:
        second = shared_socket("127.0.0.1", first.getsockname()[1])
        second.close()
    finally:
        first.close()
