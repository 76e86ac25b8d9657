"""The vicc side of vsmartcard's vpcd protocol (``se/vpcd.py``) and ``se emulate``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.se import SoftCard, personalize
from hatchway.se.vpcd import DEFAULT_PORT, VpcdCard, VpcdControl, parse_address
from hatchway.server.datadir import ensure_data_dir
from hatchway.server.process import free_port


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:35963", ("127.0.0.1", 35963)),
        ("localhost", ("localhost", DEFAULT_PORT)),
        ("[::1]:4000", ("::1", 4000)),
        ("[::1]", ("::1", DEFAULT_PORT)),
    ],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["::1", "host:0", "host:port", ":35963", "h:99999"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_control_codes_and_apdus(tmp_path: Path) -> None:
    ca = ensure_data_dir(tmp_path / "data").ca
    state = personalize(
        ca.certificate, ca.private_key, now=time.time(), random=SeededRandom(b"vpcd")
    )
    card = SoftCard(state, clock=FrozenClock(time.time()), random=SeededRandom(b"r"))
    vicc = VpcdCard(card, ("127.0.0.1", 1))
    assert vicc.handle(b"\x00a40400") == b"\x6f\x00"  # unpowered: no diagnosis, no crash
    assert vicc.handle(bytes([VpcdControl.ON])) is None
    assert vicc.handle(bytes([VpcdControl.ATR])) == card.atr
    assert vicc.handle(bytes.fromhex("00a4040008a000000151000000"))[-2:] == b"\x90\x00"
    assert vicc.handle(bytes([VpcdControl.RESET])) is None
    assert vicc.handle(b"\x07") is None  # unknown control code: ignored
    assert vicc.handle(bytes([VpcdControl.OFF])) is None
    assert vicc.apdus == 2


def test_emulate_retries_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    ca = ensure_data_dir(tmp_path / "data").ca
    from hatchway.se import CardStateFile

    card = tmp_path / "card.json"
    CardStateFile(card).save(
        personalize(ca.certificate, ca.private_key, now=time.time(), random=SeededRandom(b"vpcd2"))
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hatchway",
            "se",
            "emulate",
            "--card",
            str(card),
            "--vpcd",
            f"127.0.0.1:{free_port()}",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until it says it runs (its SIGTERM handler is installed by then): on a loaded
    # machine the interpreter alone can take longer than any fixed sleep.
    assert proc.stderr is not None
    assert "emulating card" in proc.stderr.readline()
    time.sleep(0.5)  # nobody listens: it keeps retrying with back-off
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert json.loads(out) == {
        "apdus": 0,
        "card": json.loads(card.read_text())["serial"],
        "stopped": True,
    }
