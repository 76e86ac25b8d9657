"""Firmware offers pushed over MQTT: ``device listen --install-cmd`` and ``device update --wait``.

A real ``hatchway serve`` on the machine's Mosquitto (skips without it unless CI=true)
and two device processes: one listening for commands, one waiting in ``device update
--transport mqtt --wait``; the rollout's offers are pushed to both and both confirm.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firmware_e2e.conftest import Fleet, cli
from tests.mqtt.brokers import mqtt_server, require_system_broker, unique_prefix, wait_mqtt

pytestmark = [pytest.mark.e2e, pytest.mark.mqtt]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    server = mqtt_server(tmp_path / "data", url=require_system_broker(), prefix=unique_prefix())
    server.start()
    fleet = Fleet(tmp_path, server)
    try:
        wait_mqtt(server)
        yield fleet
    finally:
        fleet.close()
        server.stop()


def _json_lines(proc: subprocess.Popen[str], until: float) -> Iterator[dict[str, object]]:
    assert proc.stdout is not None
    while time.monotonic() < until:
        line = proc.stdout.readline()
        if not line:
            return
        yield json.loads(line)


def test_offers_pushed_over_mqtt_are_installed(fleet: Fleet) -> None:
    listening, waiting = fleet.add_devices("meter-1", "meter-2")
    _, image = fleet.publish("2.1.0", 21, 2 * 65536 + 17)
    listen = subprocess.Popen(
        [
            sys.executable, "-m", "hatchway", "device", "listen", "--state",
            str(listening.state), "--install-cmd", f"{sys.executable} {listening.installer}",
            "--no-catch-up", "--json",
        ],
        env=listening.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    update = subprocess.Popen(
        [*waiting.update_cmd(), "--transport", "mqtt", "--wait", "60"],
        env=waiting.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _json_lines(listen, time.monotonic() + 60)
        assert "listening" in next(lines)
        time.sleep(1.0)  # the waiting device has subscribed too
        cli("firmware", "rollout", "2.1.0", "--group", "pilot", "--max-failures", "0", *fleet.data)
        firmware = next(line for line in lines if "firmware" in line)["firmware"]
        assert firmware["state"] == "confirmed", firmware  # type: ignore[index]
        out, err = update.communicate(timeout=60)
        assert update.returncode == 0, out + err
        assert json.loads(out.strip().splitlines()[-1])["state"] == "confirmed"
    finally:
        for proc in (listen, update):
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=15)
    for device in (listening, waiting):
        assert (device.dir / "flashed.bin").read_bytes() == image
        assert device.firmware()["sequence"] == 21
    status = fleet.status("2.1.0")
    assert [d["state"] for d in status["devices"]] == ["confirmed", "confirmed"]
