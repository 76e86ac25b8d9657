"""Drive the secure-element web flow without a browser: for the demo, tests, benchmarks.

* ``BridgeProcess`` runs a real ``hatchway se bridge`` subprocess on a free loopback
  port and stops it with SIGTERM;
* ``PageClient`` plays the web app (``server/static/se/app.js``) step for step: it
  opens the bridge WebSocket sending an ``Origin`` header — as a browser would for a
  page loaded from that origin — posts to ``/se/api/…`` over HTTPS and relays the
  APDUs, counting server round trips and APDUs.

A Python client can put any Origin it likes in the header; that is why the bridge
listens on loopback only: its threat model is remote web pages, which cannot.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from hatchway.se.appcert import web_origin


class BridgeProcess:
    """``hatchway se bridge --card CARD --allow-origin … [ARGS]`` as a subprocess."""

    def __init__(self, card: Path, origins: list[str], *, log_path: Path | None = None,
                 args: Sequence[str] = ()) -> None:
        self.card = card
        self.origins = origins
        self.args = list(args)
        self.log_path = log_path or card.with_suffix(".bridge.log")
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        cmd = [sys.executable, "-m", "hatchway", "se", "bridge", "--card", str(self.card),
               "--port", "0", "--json"]
        for origin in self.origins:
            cmd += ["--allow-origin", origin]
        cmd += self.args
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI, argument list
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ))
        log.close()
        assert self.proc.stdout is not None  # noqa: S101 - PIPE above
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"the bridge did not start; see {self.log_path}")
        self.port = int(json.loads(line)["port"])
        return self

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(slots=True)
class PageResult:
    ok: bool
    outcome: dict[str, Any]
    round_trips: int = 0
    apdus: int = 0
    seconds: float = 0.0
    #: Until the server had the channel open (its answer to the handshake batch).
    handshake_seconds: float = 0.0
    #: Bytes of APDU and response the page relayed (hex decoded).
    relayed_bytes: int = 0
    bridge_origin: str = ""
    seen: list[str] = field(default_factory=list)


class PageClient:
    """The web app's loop, in Python. ``origin`` is what the Origin header says."""

    def __init__(self, server: str, bridge: str, *, origin: str,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.server = server.rstrip("/")
        self.bridge = bridge
        self.origin = origin
        self.http = httpx.Client(verify=verify, timeout=30)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, body: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        # The API takes same-origin JSON only. The page served by the server sends its
        # own origin; so does a phishing proxy, which rewrites the header on its way
        # to the genuine server — the bridge's Origin (``self.origin``) is what differs.
        response = self.http.post(self.server + path, json=body,
                                  headers={"Origin": web_origin(self.server)})
        return response.is_success, response.json()

    def run(self) -> PageResult:
        started = time.perf_counter()
        result = PageResult(ok=False, outcome={})
        with connect(self.bridge, origin=Origin(self.origin), open_timeout=10) as ws:
            ready = json.loads(ws.recv(timeout=10))
            result.bridge_origin = ready["origin"]
            ok, step = self._post("/se/api/start", {})
            result.round_trips += 1
            next_id = 1
            while ok and not step.get("done"):
                responses = relay(ws, next_id, step["apdus"])
                next_id += 1
                result.apdus += len(step["apdus"])
                result.seen += step["apdus"] + responses
                result.relayed_bytes += sum(len(h) // 2 for h in step["apdus"] + responses)
                # The server's answer to the handshake batch means the channel is open.
                opening = step["next"].endswith("/handshake") and not result.handshake_seconds
                ok, step = self._post(step["next"], {"session": step["session"],
                                                     "responses": responses})
                result.round_trips += 1
                if ok and opening:
                    result.handshake_seconds = time.perf_counter() - started
        result.ok = ok and bool(step.get("ok"))
        result.outcome = step
        result.seconds = time.perf_counter() - started
        return result


def relay(ws: ClientConnection, request_id: int, apdus: list[str]) -> list[str]:
    """One batch through the bridge; raises ``RuntimeError`` on a bridge error."""
    ws.send(json.dumps({"id": request_id, "apdus": apdus}))
    answer = json.loads(ws.recv(timeout=30))
    if "error" in answer or answer.get("id") != request_id:
        raise RuntimeError(f"bridge error: {answer}")
    responses: list[str] = answer["responses"]
    return responses
