"""The bridge against a hostile page and a careless operator (in process).

* an allow-listed origin too long for SET ORIGIN is refused at startup, clearly,
  instead of failing every session later;
* page messages built to crash the parser (deep nesting, bad UTF-8) get an error
  reply, and the bridge keeps serving;
* a page that connects and then goes quiet loses the card after the idle timeout;
* plain-http, non-loopback origins are flagged (the CLI warns on stderr).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from hatchway.errors import ConfigurationError
from hatchway.se import SoftCard
from hatchway.se.bridge import (
    MAX_SET_ORIGIN,
    Bridge,
    RelayError,
    parse_request,
    plaintext_origins,
    set_origin_apdu,
)

from .conftest import ORIGIN

LONG = "https://" + ".".join(["a" * 63] * 3) + "." + "b" * 57 + ":8443"


def test_origin_longer_than_set_origin_can_carry_is_refused_at_startup(card: SoftCard) -> None:
    assert len(LONG) > MAX_SET_ORIGIN
    with pytest.raises(ConfigurationError, match="SET ORIGIN carries at most 255"):
        Bridge(card, [ORIGIN, LONG])
    with pytest.raises(ValueError):
        set_origin_apdu(LONG)
    with pytest.raises(ConfigurationError):
        Bridge(card, [])


def test_cli_reports_a_too_long_origin_and_exits_2(card_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hatchway",
            "se",
            "bridge",
            "--card",
            str(card_path),
            "--allow-origin",
            LONG,
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SET ORIGIN carries at most 255" in done.stdout + done.stderr


@pytest.mark.parametrize(
    "message",
    [
        "[" * 100_000,
        '{"apdus": ["00a40400"], "id": ' + "[" * 50_000 + "]" * 50_000 + "}",
        b"\xff\xfe{",
        '{"apdus": ["00a40400"], "id": ' + "9" * 5000 + "}",  # int digit limit
        "",
    ],
)
def test_parser_bombs_get_an_error_reply(card: SoftCard, message: str | bytes) -> None:
    with pytest.raises(RelayError):
        parse_request(message)
    bridge = Bridge(card, [ORIGIN])
    assert "error" in json.loads(bridge.answer(message))
    # ... and the bridge still relays the next message.
    assert json.loads(bridge.answer('{"id": 2, "apdus": ["00a4040000"]}'))["responses"]


def test_plaintext_non_loopback_origins_are_flagged() -> None:
    origins = [
        "https://se.example",
        "http://localhost:8080",
        "http://127.0.0.1:9",
        "http://[::1]:8080",
        "http://se.example",
        "http://10.0.0.2:8080",
    ]
    assert plaintext_origins(origins) == ["http://se.example", "http://10.0.0.2:8080"]


def test_cli_warns_about_a_plaintext_origin(card_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hatchway",
            "se",
            "bridge",
            "--card",
            str(card_path),
            "--allow-origin",
            "http://se.example",
            "--port",
            "0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and json.loads(proc.stdout.readline())["port"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "warning: http://se.example is plain http" in " ".join(err.split())


def test_an_idle_page_loses_the_card(card: SoftCard) -> None:
    async def scenario() -> tuple[int, str, str]:
        stop, ports = asyncio.Event(), asyncio.Queue[int]()
        bridge = Bridge(card, [ORIGIN], port=0, idle_timeout=0.3)
        task = asyncio.create_task(bridge.run(stop, ports.put_nowait))
        url = f"ws://127.0.0.1:{await ports.get()}/"
        try:
            async with connect(url, origin=Origin(ORIGIN)) as idle:
                await idle.recv()
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(idle.recv(), 10)
            assert closed.value.rcvd is not None
            async with connect(url, origin=Origin(ORIGIN)) as next_page:
                ready = json.loads(await next_page.recv())["type"]
            return closed.value.rcvd.code, closed.value.rcvd.reason, ready
        finally:
            stop.set()
            await task

    assert asyncio.run(scenario()) == (1000, "idle timeout", "ready")
