"""The store fails while an uplink is being handled: the uplink is not acknowledged,
the gateway drops its connection and backs off, the broker redelivers, and once the
store is back the message is stored exactly once and answered.

The failure is real: the ``messages`` table is renamed away under the running server
(SQLite sees the schema change on its next statement) and renamed back later.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.device import Device, MqttTransport
from hatchway.msgsec import MessageType, seal
from hatchway.server.process import ServerProcess
from tests.mqtt.helpers import Spy, cli, eventually, open_store

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]


def errors_logged(server: ServerProcess) -> int:
    lines = [json.loads(x) for x in server.log_path.read_text().splitlines() if x[:1] == "{"]
    return sum(1 for line in lines if line.get("status") == "error")


def test_uplink_survives_a_store_failure(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    secret = str(cli("device", "provision", "meter-f", data_dir=server.data_dir)["secret"])
    device = Device.enroll(
        server=server.https_url,
        device_id="meter-f",
        secret=secret,
        state_path=tmp_path / "meter-f.json",
        ca_file=server.ca_file,
        transport=MqttTransport(),
    )
    device.send({"n": 0})
    message = device._message(
        MessageType.TELEMETRY, {"mid": uuid.uuid4().hex, "readings": {"n": 1}}, None
    )
    token = seal(
        message,
        signing_key=device._signing,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=device.random,
    )
    device.close()
    spy = Spy(f"{prefix}/d/meter-f/down").start()

    db = sqlite3.connect(server.data_dir / "hatchway.sqlite3")
    db.execute("ALTER TABLE messages RENAME TO messages_parked")
    db.commit()
    publisher = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = secrets.token_bytes(16)
        publisher.publish(f"{prefix}/d/meter-f/up", token, qos=1, properties=props)
        # Handled, failed, not acknowledged; redelivered after the reconnect, failed again.
        eventually(lambda: errors_logged(server) >= 2, what="a redelivery into the failure")
        assert spy.messages == []
    finally:
        db.execute("ALTER TABLE messages_parked RENAME TO messages")
        db.commit()
        db.close()
    try:
        eventually(lambda: len(spy.messages) == 1, timeout=60, what="the reply after recovery")
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        spy.stop()
    with open_store(server.data_dir) as store:
        rows = store.list_messages("meter-f")
    assert sorted(row.body["readings"]["n"] for row in rows) == [0, 1]
