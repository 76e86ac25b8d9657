"""Issue 9 revocation over MQTT, against the real Mosquitto and a real ``hatchway serve``.

The notice is pushed on the revoked device's downlink: a listening device process gets
it at once (exits 3, keys deleted), and a device with a persistent session that was
offline gets it from the broker when it reconnects. A device that missed the push is
told in the reply to its next uplink. After that everything from it is refused, and the
CRL from the metadata's URL lists each certificate.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from hatchway.device import Device, DeviceRevoked, MqttTransport, TransportError
from hatchway.server.process import ServerProcess
from tests.e2e.revocation_helpers import (
    EXIT_REVOKED,
    assert_crl_lists,
    certificate_of,
    hatchway,
    ok_json,
)
from tests.mqtt.helpers import eventually, open_store

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]


def unique(name: str) -> str:
    """A device id (and so an MQTT client id) no concurrent run on the shared broker uses:
    a persistent session taken over by another run's client would eat our pushes."""
    return f"{name}-{secrets.token_hex(4)}"


def enrolled(server: ServerProcess, device_id: str, tmp_path: Path) -> Path:
    secret = ok_json(hatchway("device", "provision", device_id, "--json", server=server))
    state = tmp_path / f"{device_id}.json"
    device = Device.enroll(
        server=server.https_url,
        device_id=device_id,
        secret=str(secret["secret"]),
        state_path=state,
        ca_file=server.ca_file,
        transport=MqttTransport(),  # persistent: the broker keeps its session
    )
    with device:
        assert device.send({"kwh": 1}).body["status"] == "stored"
    return state


def revoke(server: ServerProcess, device_id: str) -> None:
    ok_json(hatchway("device", "revoke", device_id, "--reason", "stolen", "--json", server=server))


def pushed(server: ServerProcess, device_id: str) -> bool:
    with open_store(server.data_dir) as store:
        revocation = store.get_revocation(device_id)
    return revocation is not None and revocation.notice_pushed_at is not None


def test_a_listening_device_gets_the_pushed_notice_and_exits(
    server: ServerProcess, tmp_path: Path
) -> None:
    dev = unique("meter-l")
    state = enrolled(server, dev, tmp_path)
    cert = certificate_of(state)
    listener = subprocess.Popen(
        [sys.executable, "-m", "hatchway", "device", "listen", "--state", str(state), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HATCHWAY_DATA_DIR": str(server.data_dir)},
    )
    try:
        assert listener.stdout is not None
        assert json.loads(listener.stdout.readline())["listening"] == dev
        revoke(server, dev)
        assert listener.wait(30) == EXIT_REVOKED
        lines = listener.stdout.read().strip().splitlines()
        assert len(lines) == 1 and "revoked" in json.loads(lines[0])["error"]
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        for stream in (listener.stdout, listener.stderr):
            if stream is not None:
                stream.close()
    assert "signing_key" not in json.loads(state.read_text())
    assert_crl_lists(server, cert.serial_number, reason=x509.ReasonFlags.key_compromise)


def test_an_offline_device_gets_the_notice_from_its_session_on_reconnect(
    server: ServerProcess, tmp_path: Path
) -> None:
    dev = unique("meter-p")
    state = enrolled(server, dev, tmp_path)
    revoke(server, dev)
    eventually(lambda: pushed(server, dev), what="the notice push")
    device = Device.load(state, transport=MqttTransport())
    try:
        with pytest.raises(DeviceRevoked, match="stolen"):
            device.receive(timeout=20)
        with pytest.raises(DeviceRevoked):
            device.send({"kwh": 2})  # never sends again
    finally:
        device.close()
    assert json.loads(state.read_text())["revoked"]["device_id"] == dev


def test_a_device_that_missed_the_push_is_told_in_the_reply_then_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    dev = unique("meter-r")
    state = enrolled(server, dev, tmp_path)
    cert = certificate_of(state)
    thief = tmp_path / "thief.json"
    shutil.copy(state, thief)
    revoke(server, dev)
    eventually(lambda: pushed(server, dev), what="the notice push")
    # A one-shot session: the push went to the persistent session, not to this one.
    done = hatchway(
        "device",
        "send",
        "--state",
        str(state),
        "--transport",
        "mqtt",
        '{"kwh": 2}',
        server=server,
    )
    assert done.returncode == EXIT_REVOKED, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "signing_key" not in json.loads(state.read_text())
    # The copy of its keys gets no answer at all over MQTT (refused, logged, dropped).
    copy = Device.load(thief, transport=MqttTransport(persistent=False, timeout=3.0), retry_for=0)
    try:
        with pytest.raises(TransportError):
            copy.send({"kwh": 3})
    finally:
        copy.close()
    with open_store(server.data_dir) as store:
        assert store.count_messages(dev) == 1
    assert_crl_lists(server, cert.serial_number, reason=x509.ReasonFlags.key_compromise)
