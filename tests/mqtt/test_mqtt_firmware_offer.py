"""Issue 9 over MQTT: a rollout's offer is pushed to a device on its downlink topic.

Real Mosquitto, real ``hatchway serve``, the operator CLI in a subprocess: the offer
row goes through the same push loop as a queued command and arrives sealed as
``FIRMWARE_UPDATE`` (server-initiated: no ``irt``), with the content key wrapped to
that device; the device's report over MQTT is recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hatchway.device import Device, MqttTransport
from hatchway.firmware import (
    DevicePosition,
    TrustStore,
    check_manifest,
    generate_firmware_key,
    sign_manifest,
    unwrap_content_key,
)
from hatchway.firmware import files as fwfiles
from hatchway.msgsec import MessageType, OpenPolicy, open_message
from hatchway.server.process import ServerProcess
from tests.firmware.conftest import image_bytes, make_manifest
from tests.mqtt.helpers import cli, open_store

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]


def test_offer_is_pushed_over_mqtt_and_the_report_recorded(
    server: ServerProcess, tmp_path: Path
) -> None:
    data = server.data_dir
    key = generate_firmware_key()
    fwfiles.write_keypair(tmp_path / "fw.jwk", key)
    image = image_bytes(100_000)
    (tmp_path / "img.bin").write_bytes(image)
    now = int(time.time())
    manifest = make_manifest(image, issued_at=now - 60, expires_at=now + 86400)
    (tmp_path / "m").write_bytes(sign_manifest(manifest, key))
    cli("firmware", "trust", str(tmp_path / "fw.pub.jwk"), data_dir=data)
    release = cli("firmware", "publish", str(tmp_path / "m"), str(tmp_path / "img.bin"),
                  data_dir=data)["release"]  # fmt: skip

    secret = str(cli("device", "provision", "meter-fw", data_dir=data)["secret"])
    transport = MqttTransport()
    device = Device.enroll(
        server=server.https_url,
        device_id="meter-fw",
        secret=secret,
        state_path=tmp_path / "meter-fw.json",
        ca_file=server.ca_file,
        transport=transport,
    )
    try:
        assert device.send({"hello": 1}).body["status"] == "stored"  # session exists
        cli("groups", "add", "pilot", "meter-fw", data_dir=data)
        cli("firmware", "rollout", "2.1.0", "--group", "pilot", data_dir=data)
        raw = transport.receive(timeout=20)
        assert raw is not None
        offer, _ = open_message(
            raw,
            decryption_keys={device._decryption.kid: device._decryption},
            resolve_sender=lambda kid: device._server,
            policy=OpenPolicy(
                audience="meter-fw", expected=frozenset({MessageType.FIRMWARE_UPDATE})
            ),
            now=time.time(),
        )
        assert offer.in_reply_to is None and offer.body["release"] == release
        checked = check_manifest(
            offer.body["manifest"],
            trust=TrustStore.of(key.public()),
            position=DevicePosition("acme-meter-v2", 20, "2.0.0"),
            now=time.time(),
        )
        unwrap_content_key(offer.body["key"], device._decryption, checked.sha256)
        body = {"release": release, "state": "refused", "reason": "below_min_version"}
        ack = device._exchange(MessageType.FIRMWARE_REPORT, body, {MessageType.ACK})
        assert ack.body["status"] == "recorded"
        with open_store(data) as store:
            rollout, rows = store.rollout_status(release)
        assert rollout is not None and rollout.state == "paused"  # 1 > --max-failures 0
        assert [(r.state, r.reason) for r in rows] == [("refused", "below_min_version")]
    finally:
        device.close()
