"""Raw-socket HTTP/1.1 for the attack tests: what curl and httpx refuse to send."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hatchway.server.process import ServerProcess


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    ca_file: Path | None  # None: plain TCP

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.ca_file is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context.wrap_socket(sock, server_hostname="localhost")


def listeners(server: ServerProcess) -> dict[str, Listener]:
    return {
        "plain": Listener("plain", server.http_port, None),
        "https": Listener("https", server.https_port, server.ca_file),
    }


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket, timeout: float) -> Answer | None:
    """Read one response (Content-Length framed); ``None`` if the server closed first."""
    deadline = time.monotonic() + timeout
    data = b""
    closed = False
    while b"\r\n\r\n" not in data or len(data) < _needed(data):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            closed = True
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not closed:
        sock.settimeout(0.3)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except (ConnectionResetError, ssl.SSLError):
            closed = True
    return Answer(int(lines[0].split()[1]), headers, body, closed)


def _needed(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value.strip())
    return len(head) + 4


def exchange(listener: Listener, request: bytes, timeout: float = 5.0) -> Answer | None:
    with listener.connect(timeout) as sock:
        sock.sendall(request)
        return read_answer(sock, timeout)


def error_lines(log_path: Path) -> list[str]:
    """Every log line at ERROR or worse (the server logs one JSON object per line)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            level = json.loads(line).get("level")
        except ValueError:
            level = "error" if "Traceback" in line else None
        if level in ("error", "critical"):
            out.append(line)
    return out


def log_records(log_path: Path) -> list[dict[str, Any]]:
    records = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
