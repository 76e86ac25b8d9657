"""Shared pieces of the MQTT tests: a CLI runner, a `#` spy and a store reader."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hatchway.server.process import ServerProcess
from hatchway.store import Store

T = TypeVar("T")


def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``hatchway … --json`` against ``data_dir``; one JSON object back."""
    full_env = {**os.environ, "HATCHWAY_DATA_DIR": str(data_dir), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", *args, "--json"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def mqtt_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """The server's ``hatchway.access`` lines for the MQTT listener, oldest first."""
    lines = [json.loads(x) for x in server.log_path.read_text().splitlines() if x.startswith("{")]
    return [line for line in lines if line.get("listener") == "mqtt"]


def open_store(data_dir: Path) -> Store:
    return Store.open(f"sqlite:///{data_dir / 'hatchway.sqlite3'}")


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def is_compact_jwe(payload: bytes) -> bool:
    """Five base64url parts whose protected header names a key agreement and AES-GCM."""
    parts = payload.split(b".")
    if len(parts) != 5:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + b"=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return header.get("alg") in ("ECDH-ES", "ECDH-ES+A256KW") and header.get("enc") == "A256GCM"


class Spy:
    """An MQTT subscriber on a topic filter (``prefix/#``) recording every publish."""

    def __init__(
        self, topic_filter: str, *, port: int = 1883, user: str | None = None, pw: str = ""
    ) -> None:
        self.topic_filter = topic_filter
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.granted: list[int] = []
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            protocol=paho.MQTTv5,
            client_id=f"spy-{secrets.token_hex(6)}",
        )
        if user:
            self._client.username_pw_set(user, pw)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._port = port

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        self.granted = [int(c.value) for c in codes]
        self.subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload)))

    def start(self) -> Spy:
        self._client.connect("127.0.0.1", self._port)
        self._client.loop_start()
        assert self.subscribed.wait(10), "the spy could not subscribe"
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
