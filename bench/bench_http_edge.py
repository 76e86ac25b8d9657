"""What the guarded h11 protocol (issue 7: deadlines, cap, JSON errors) costs per request.

Baseline in the same run: the same plain-listener app under uvicorn's default
``httptools`` protocol, which has none of the guards. Both run in-thread on loopback;
one client sends keep-alive requests one after another over a raw socket, so protocol
overhead is all that differs. Two requests: ``GET /healthz`` (no body) and a refused
``POST /m`` with a 1,335-byte body (the size of a real sealed token), which reads the
body through ``BodyDeadline`` and answers the uniform 400.

    .venv/bin/python bench/bench_http_edge.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from hatchway.config import Settings
from hatchway.server.context import ServerContext
from hatchway.server.edge import PLAIN_SHAPE, Limits, guarded_protocol
from hatchway.server.plain_app import build_plain_app
from hatchway.server.process import free_port


def start(app: Any, http: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, port


def rate(port: int, request: bytes, n: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def one() -> None:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += sock.recv(65536)

        for _ in range(50):
            one()
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n // 5):
                one()
            samples.append((n // 5) / (time.perf_counter() - started))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every refused POST logs a warning: not what we time
    body = b"e" * 1335
    requests = {
        "GET /healthz": b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "POST /m (refused)": (
            b"POST /m HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/jose\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ServerContext.create(Settings(data_dir=Path(tmp) / "data"))
        app = build_plain_app(ctx)
        guarded = guarded_protocol(Limits(), PLAIN_SHAPE, "plain")
        results = {}
        for name, http in (("httptools (no guards)", "httptools"), ("guarded h11", guarded)):
            server, thread, port = start(app, http)
            results[name] = {k: rate(port, r, args.requests) for k, r in requests.items()}
            server.should_exit = True
            thread.join(10)
        ctx.close()
    print(f"{'request':<20} {'httptools req/s':>16} {'guarded h11 req/s':>18} {'ratio':>7}")
    for key in requests:
        base, ours = results["httptools (no guards)"][key], results["guarded h11"][key]
        print(f"{key:<20} {base:>16.0f} {ours:>18.0f} {base / ours:>6.2f}x")


if __name__ == "__main__":
    main()
