"""MQTT with ``hatchway serve --workers 2`` (issue 10 §1), on the machine's Mosquitto.

Every worker joins the shared subscription under its own client id (worker 0 the
configured one, worker 1 with ``-w1``), the broker spreads the uplinks over both,
each is stored exactly once through the shared writer, and a queued command is pushed
by exactly one of them.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.device import Device, MqttTransport
from hatchway.server.process import ServerProcess
from tests.mqtt.brokers import mqtt_server, require_system_broker
from tests.mqtt.helpers import cli, eventually, open_store

pytestmark = pytest.mark.e2e

DEVICES = 4
MESSAGES = 10


@pytest.fixture
def server(tmp_path: Path, prefix: str) -> Iterator[ServerProcess]:
    proc = mqtt_server(
        tmp_path / "data",
        url=require_system_broker(),
        prefix=prefix,
        HATCHWAY_WORKERS="2",
        HATCHWAY_LOG_LEVEL="info",
    )
    proc.start(timeout=90)
    try:
        eventually(lambda: len(log_records(proc, "mqtt connected")) == 2 or None, timeout=30)
        yield proc
    finally:
        proc.stop()


def log_records(server: ServerProcess, msg: str) -> list[dict[str, object]]:
    records = []
    for line in server.log_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == msg:
                records.append(record)
    return records


def test_two_workers_share_the_uplinks_and_store_each_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    client_ids = sorted(str(r["client_id"]) for r in log_records(server, "mqtt connected"))
    assert client_ids[1] == client_ids[0] + "-w1"
    devices = []
    for n in range(DEVICES):
        device_id = f"meter-{n}"
        secret = str(cli("device", "provision", device_id, data_dir=server.data_dir)["secret"])
        devices.append(
            Device.enroll(
                server=server.https_url,
                device_id=device_id,
                secret=secret,
                state_path=tmp_path / f"{device_id}.json",
                ca_file=server.ca_file,
                transport=MqttTransport(),
            )
        )
    errors: list[BaseException] = []

    def send(device: Device) -> None:
        try:
            for i in range(MESSAGES):
                assert device.send({"i": i}).body["status"] == "stored"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and errors == []

    store = open_store(server.data_dir)
    try:
        for device in devices:
            counts = Counter(m.body["readings"]["i"] for m in store.list_messages(device.device_id))
            assert counts == Counter(range(MESSAGES)), device.device_id
    finally:
        store.close()
    handled = Counter(r.get("worker") for r in log_records(server, "mqtt message"))
    assert set(handled) == {0, 1} and sum(handled.values()) == DEVICES * MESSAGES

    # One queued command, two workers' push loops: it reaches the device once.
    cid = str(
        cli("device", "command", "meter-0", '{"op": "ping"}', data_dir=server.data_dir)["cid"]
    )
    command = devices[0].receive(timeout=30)
    assert command is not None and command.cid == cid
    assert devices[0].respond(command, {"pong": True}).body["status"] == "recorded"
    assert [r.get("cid") for r in log_records(server, "mqtt push")] == [cid]
    for device in devices:
        device.close()
