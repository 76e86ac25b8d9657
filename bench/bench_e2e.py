"""End-to-end sealed messages per second on loopback, against TLS per message.

Path measured: SDK seal -> plain HTTP (keep-alive) -> server open, replay check, store
-> sealed reply -> SDK open. Baseline in the same run: the *same* sealed messages, each
sent over a brand-new TLS connection (full handshake) to the HTTPS listener's copy of
the endpoint. Bytes on the wire are counted at the socket: for TLS, every handshake
and record byte through an ``ssl.MemoryBIO``.

    .venv/bin/python bench/bench_e2e.py [--messages N]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/jose\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_response(recv: callable[[], bytes]) -> tuple[bytes, int]:  # type: ignore[valid-type]
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = recv()
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += recv()
    status = int(head.split(b" ")[1])
    return rest[:length], status


class PlainConnection:
    """One keep-alive TCP connection; counts bytes both ways."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sent = self.received = 0

    def post(self, token: bytes) -> bytes:
        request = http_request("localhost", self.port, "/m", token)
        self.sock.sendall(request)
        self.sent += len(request)

        def recv() -> bytes:
            chunk = self.sock.recv(65536)
            self.received += len(chunk)
            return chunk

        body, status = read_response(recv)
        assert status == 200, status
        return body


def tls_post_new_connection(port: int, context: ssl.SSLContext, token: bytes) -> tuple[bytes, int]:
    """A full TLS handshake + one request on a fresh connection; returns (reply, wire bytes)."""
    sock = socket.create_connection(("127.0.0.1", port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    wire = 0

    def flush() -> None:
        nonlocal wire
        data = outgoing.read()
        if data:
            wire += len(data)
            sock.sendall(data)

    def pump() -> None:
        nonlocal wire
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        wire += len(data)
        incoming.write(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush()
            pump()
    flush()
    tls.write(http_request("localhost", port, "/m", token))
    flush()

    def recv() -> bytes:
        while True:
            try:
                return tls.read(65536)
            except ssl.SSLWantReadError:
                pump()

    body, status = read_response(recv)
    assert status == 200, status
    sock.close()
    return body, wire


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    n = args.messages

    root = Path(tempfile.mkdtemp(prefix="hatchway-bench-"))
    with ServerProcess(root / "data", env={"HATCHWAY_LOG_LEVEL": "warning"}) as server:
        ctx = ServerContext.create(settings_from_env({"HATCHWAY_DATA_DIR": str(server.data_dir)}))
        secret = ctx.enrolment.provision("bench-1")
        ctx.close()

        sealed: list[bytes] = []

        class Capture:
            def __init__(self) -> None:
                self.conn = PlainConnection(server.http_port)

            def __call__(self, url: str, token: bytes) -> bytes:
                sealed.append(token)
                return self.conn.post(token)

        capture = Capture()
        device = Device.enroll(
            server=server.https_url,
            device_id="bench-1",
            secret=secret,
            state_path=root / "bench-1.json",
            ca_file=server.ca_file,
            transport=capture,
        )
        telemetry = {
            "kwh": 12.5,
            "volts": 229.8,
            "amps": 3.1,
            "ts": 1_700_000_000,
            "fw": "1.4.2",
            "pad": "x" * 120,
        }
        # Warm up, then measure the whole SDK round trip over keep-alive plain HTTP.
        for _ in range(20):
            device.send(telemetry)
        sealed.clear()
        capture.conn.sent = capture.conn.received = 0
        start = time.perf_counter()
        for _ in range(n):
            device.send(telemetry)
        plain_s = time.perf_counter() - start
        plain_bytes = (capture.conn.sent + capture.conn.received) / n
        token_bytes = statistics.mean(len(t) for t in sealed)

        # Baseline: fresh sealed messages (replays would be refused), each over new TLS.
        context = ssl.create_default_context(cafile=str(server.ca_file))
        context.options |= ssl.OP_NO_TICKET  # a brand-new connection each time, no resumption
        tls_tokens = []
        for _ in range(n):
            device._transport = lambda url, tok: (tls_tokens.append(tok), b"")[1]  # type: ignore[assignment]
            # Only the sealed token is wanted here; the empty "reply" fails to open.
            with contextlib.suppress(Exception):
                device.send(telemetry)
        wire_total = 0
        start = time.perf_counter()
        for token in tls_tokens:
            _, wire = tls_post_new_connection(server.https_port, context, token)
            wire_total += wire
        tls_s = time.perf_counter() - start
        tls_bytes = wire_total / n

    print(f"messages: {n}, sealed token {token_bytes:.0f} B")
    rows = (
        ("plain HTTP keep-alive", n / plain_s, plain_bytes),
        ("new TLS per message", n / tls_s, tls_bytes),
    )
    for name, rate, size in rows:
        print(f"sealed over {name:22}: {rate:8.1f} msg/s  {size:7.0f} B/msg on the wire")
    print(f"throughput plain / TLS-per-message: {tls_s / plain_s:.2f}x")
    print(f"bytes on the wire TLS-per-message / plain: {tls_bytes / plain_bytes:.2f}x")


if __name__ == "__main__":
    main()
