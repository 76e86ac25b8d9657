"""Test-side peers: a phishing reverse proxy and a private pcscd.

The proxy is what an attacker would run: on its own origin it serves the genuine web
app and relays every request, the API included, to the genuine server, so the page
receives the genuine application certificate. Only the origin differs.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from hatchway.se.cardstate import CardStateFile


class PhishingProxy:
    """Plain-HTTP reverse proxy on 127.0.0.1:<free port> in front of ``upstream``."""

    def __init__(self, upstream: str, ca_file: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.client = httpx.Client(
            verify=ssl.create_default_context(cafile=str(ca_file)), timeout=30
        )
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                # An attacker's proxy rewrites Origin for the genuine server, so the
                # server's same-origin check passes: only the card can tell.
                headers = {
                    "content-type": self.headers.get("content-type", "text/plain"),
                    "origin": proxy.upstream,
                }
                answer = proxy.client.request(
                    method, proxy.upstream + self.path, content=body, headers=headers
                )
                self.send_response(answer.status_code)
                for name in ("content-type", "content-security-policy"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> PhishingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.close()


def card_secret(card: Path) -> bytes | None:
    return CardStateFile(card).load().secret


def card_json(card: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(card.read_text())
    return data


PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PCSCD_PID = Path("/run/pcscd/pcscd.pid")


def running_pcscd() -> int | None:
    """The pid of a live pcscd that owns the standard socket, if any."""
    try:
        pid = int(PCSCD_PID.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if PCSCD_SOCKET.exists() else None


class Pcscd:
    """A foreground pcscd we start (and stop), or an already running one we reuse.

    A pcscd started here reads a private reader.conf.d whose only reader is vpcd on
    ``port``, so it never touches the machine's real readers. An existing pcscd (one
    per machine: its socket path is fixed) is left alone; its vpcd listens on 35963.
    """

    def __init__(self, pcscd: str, workdir: Path, port: int) -> None:
        self.pcscd = pcscd
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "pcscd.log"

    def start(self, timeout: float = 15.0) -> Pcscd:
        if running_pcscd() is not None:
            self.port = 35963
            return self
        conf = self.workdir / "reader.conf.d"
        conf.mkdir(exist_ok=True)
        (conf / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            "LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\n"
            f"CHANNELID    0x{self.port:04X}\n"
        )
        # A stale socket from a killed pcscd makes a new one refuse to start.
        if PCSCD_SOCKET.exists():
            PCSCD_SOCKET.unlink()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.pcscd, "--foreground", "--apdu", "--config", str(conf)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not PCSCD_SOCKET.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pcscd did not start; see {self.log_path}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
