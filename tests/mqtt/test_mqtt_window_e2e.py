"""A window of uplinks from many devices, handled concurrently by a real server.

The gateway keeps up to 64 uplinks in flight so that they share group-commit batches
(docs/mqtt.md). These tests show, against real Mosquitto brokers, that:

* every uplink of the window is answered and stored once, a byte-identical redelivery
  in the same window included, and a forgery in the middle of it is refused;
* the server PUBACKs them in the order the broker sent them (MQTT 5 §4.6
  [MQTT-4.6.0-2]), read from the broker's own log, while many were in flight at once;
* each device's replies come back in the order of its uplinks;
* a server SIGKILLed mid-window loses nothing it had answered, and after its restart
  the broker's redeliveries leave every message stored exactly once.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.msgsec import MessageType, seal
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess
from tests.mqtt.brokers import MosquittoProcess, mqtt_server, unique_prefix, wait_mqtt
from tests.mqtt.helpers import Spy, eventually, mqtt_lines, open_store

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]

DEVICES = 8
PER_DEVICE = 12


def enrol_many(server: ServerProcess, tmp_path: Path, count: int) -> list[Device]:
    """Devices enrolled over HTTPS (they only seal here; the test publishes for them)."""
    ops = ServerContext.create(settings_from_env(server.env()))
    try:
        return [
            Device.enroll(
                server=server.https_url,
                device_id=f"meter-{i:02d}",
                secret=ops.enrolment.provision(f"meter-{i:02d}"),
                state_path=tmp_path / f"meter-{i:02d}.json",
                ca_file=server.ca_file,
                message_ttl=600,
            )
            for i in range(count)
        ]
    finally:
        ops.close()


def sealed(device: Device, i: int) -> tuple[str, bytes]:
    """Telemetry number ``i`` of ``device``, sealed now: (its mid, the token)."""
    mid = uuid.uuid4().hex
    message = device._message(MessageType.TELEMETRY, {"mid": mid, "readings": {"i": i}}, None)
    return mid, seal(
        message,
        signing_key=device._signing,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=device.random,
    )


class Publisher:
    """The devices' side of the broker, all in one client: QoS 1 with correlation data."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, token: bytes, correlation: bytes) -> paho.MQTTMessageInfo:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = correlation
        return self.client.publish(topic, token, qos=1, properties=props)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def interleaved(devices: list[Device], per_device: int) -> list[tuple[str, str, bytes, bytes]]:
    """(device id, mid, token, correlation) round-robin over the devices, as a fleet
    reporting at the same moment looks to the server."""
    order = []
    for i in range(per_device):
        for device in devices:
            mid, token = sealed(device, i)
            order.append((device.device_id, mid, token, f"{device.device_id}:{i}".encode()))
    return order


def stored_mids(server: ServerProcess, devices: list[Device]) -> list[str]:
    with open_store(server.data_dir) as store:
        return [
            str(row.body["mid"])
            for d in devices
            for row in store.list_messages(d.device_id, limit=1000)
        ]


def handled(server: ServerProcess) -> list[str]:
    """The status of every uplink the server answered or refused, in release order."""
    return [str(line["status"]) for line in mqtt_lines(server) if line["msg"] == "mqtt message"]


@pytest.fixture
def logged_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A Mosquitto of our own that logs every packet, so the PUBACK order can be read."""
    broker = MosquittoProcess(tmp_path / "broker", extra="log_type all\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_window_from_many_devices_is_acked_in_order_and_stored_once(
    logged_broker: MosquittoProcess, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    server = mqtt_server(tmp_path / "data", url=logged_broker.url(), prefix=prefix)
    server.start()
    try:
        wait_mqtt(server)
        devices = enrol_many(server, tmp_path, DEVICES)
        order = interleaved(devices, PER_DEVICE)
        spy = Spy(f"{prefix}/d/+/down", port=logged_broker.port).start()
        publisher = Publisher(logged_broker.port)
        try:
            for device_id, _, token, correlation in order:
                publisher.publish(f"{prefix}/d/{device_id}/up", token, correlation)
            # In the same window: a byte-identical copy (a redelivery) of one uplink,
            # and meter-00's token moved onto meter-01's topic (a forgery).
            device_id, _, token, correlation = order[DEVICES]
            publisher.publish(f"{prefix}/d/{device_id}/up", token, correlation)
            publisher.publish(f"{prefix}/d/meter-01/up", order[0][2], b"forged")
            # The copy is answered from the reply cache, or refused as a replay when
            # it caught up with the original still in flight: acknowledged either way.
            eventually(
                lambda: len(handled(server)) == len(order) + 2, timeout=60, what="every uplink"
            )
            eventually(lambda: len(spy.messages) >= len(order), what="every reply")
        finally:
            publisher.close()
            spy.stop()
        # Stored once each: the redelivery and the forgery added nothing.
        mids = stored_mids(server, devices)
        assert sorted(mids) == sorted(mid for _, mid, _, _ in order)
        # Each device's replies in the order of its uplinks (the redelivery's reply,
        # the same sealed bytes again, comes after the original's).
        for device in devices:
            mine = dict.fromkeys(  # first arrival of each reply
                c.decode()
                for (topic, _), c in zip(spy.messages, spy.correlations, strict=True)
                if topic.endswith(f"/{device.device_id}/down") and c is not None
            )
            numbers = [int(c.split(":")[1]) for c in mine]
            assert sorted(set(numbers)) == list(range(PER_DEVICE)), device.device_id
            assert numbers == sorted(numbers), device.device_id
        assert b"forged" not in spy.correlations
        statuses = handled(server)
        assert statuses.count("ok") == len(order)
        assert statuses.count("refused") >= 1  # the forgery
        assert statuses.count("redelivery") + statuses.count("refused") == 2
    finally:
        server.stop()
    for device in devices:
        device.close()
    # The broker's view of the server's session: PUBACKs in the order of the PUBLISHes
    # it was sent, and more than one in flight at a time (the window is concurrent).
    client_id = server.env()["HATCHWAY_MQTT_CLIENT_ID"]
    sent: list[int] = []
    acked: list[int] = []
    most_in_flight = 0
    for line in logged_broker.log_path.read_text().splitlines():
        if m := re.search(rf"Sending PUBLISH to {client_id} \(d0, q1, r0, m(\d+),", line):
            sent.append(int(m.group(1)))
        elif m := re.search(rf"Received PUBACK from {client_id} \(Mid: (\d+),", line):
            acked.append(int(m.group(1)))
        most_in_flight = max(most_in_flight, len(sent) - len(acked))
    assert len(sent) == len(order) + 2
    assert acked == sent
    assert most_in_flight > 1


def test_server_killed_mid_window_loses_nothing_it_answered(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    """Many devices' uplinks in flight at once; SIGKILL once some are answered. Every
    answered one was stored before the kill, and after the restart (same client id,
    so the broker redelivers the session's unacknowledged uplinks) all are stored
    exactly once."""
    devices = enrol_many(server, tmp_path, DEVICES)
    # More than the window (64), so that the kill finds uplinks not yet received.
    order = interleaved(devices, 20)
    mid_of = {correlation: mid for _, mid, _, correlation in order}
    spy = Spy(f"{prefix}/d/+/down").start()
    publisher = Publisher(1883)
    try:
        for device_id, _, token, correlation in order:
            publisher.publish(f"{prefix}/d/{device_id}/up", token, correlation)
        eventually(lambda: len(spy.messages) >= 5, timeout=60, what="the first replies")
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        stored_at_kill = set(stored_mids(server, devices))
        answered = {mid_of[c] for c in list(spy.correlations) if c is not None}
        # Acknowledged (answered) implies durable: nothing answered is missing.
        assert answered <= stored_at_kill
        assert len(stored_at_kill) < len(order)  # the kill really was mid-window
        server.start()
        wait_mqtt(server)
        eventually(
            lambda: len(stored_mids(server, devices)) >= len(order),
            timeout=60,
            what="every message stored",
        )
    finally:
        publisher.close()
        spy.stop()
        for device in devices:
            device.close()
    mids = stored_mids(server, devices)
    assert sorted(mids) == sorted(mid_of.values())  # each exactly once
