"""Two ``hatchway serve`` replicas on one PostgreSQL database and one MQTT share group.

The uplinks of one device are spread over both replicas by the broker's shared
subscription, and a command queued by the operator's CLI is pushed at once (woken by
the PostgreSQL bus; the timer sweep alone would take 30 s) by exactly one replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.device import Device, MqttTransport
from hatchway.server.process import ServerProcess, free_port
from tests.mqtt.brokers import require_system_broker, unique_prefix, wait_mqtt
from tests.mqtt.helpers import cli, mqtt_lines
from tests.replicas.conftest import _copy_identity, fresh_database, replica_pair

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture
def database_url() -> Iterator[str]:
    with fresh_database("hw_mqtt") as url:
        yield url


@pytest.fixture
def replicas(tmp_path: Path, database_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    broker = require_system_broker()
    https, http = free_port(), free_port()
    env = {
        "HATCHWAY_DATABASE_URL": database_url,
        "HATCHWAY_PUBLIC_HTTPS_URL": f"https://localhost:{https}",
        "HATCHWAY_PUBLIC_HTTP_URL": f"http://localhost:{http}",
        "HATCHWAY_MQTT_URL": broker,
        "HATCHWAY_MQTT_TOPIC_PREFIX": unique_prefix(),
    }
    a, b = replica_pair(tmp_path, env, name="hw", a_ports=(https, http))
    try:
        a.start()
        _copy_identity(a.data_dir, b.data_dir)
        b.start()
        wait_mqtt(a)
        wait_mqtt(b)
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_shared_subscription_and_one_push_woken_by_the_bus(
    replicas: tuple[ServerProcess, ServerProcess], tmp_path: Path, database_url: str
) -> None:
    a, b = replicas
    pg = {"HATCHWAY_DATABASE_URL": database_url}
    secret = str(cli("device", "provision", "meter-r", data_dir=a.data_dir, env=pg)["secret"])
    device = Device.enroll(
        server=a.https_url,
        device_id="meter-r",
        secret=secret,
        state_path=tmp_path / "meter-r.json",
        ca_file=a.ca_file,
        transport=MqttTransport(),
    )
    for i in range(20):
        assert device.send({"i": i}).body["status"] == "stored"
    handled = [sum(1 for line in mqtt_lines(s) if line["status"] == "ok") for s in (a, b)]
    assert sum(handled) == 20 and min(handled) > 0  # both replicas took a share

    queued = cli("device", "command", "meter-r", '{"op": "r"}', data_dir=b.data_dir, env=pg)
    cid = str(queued["cid"])
    # Well inside the 30 s PostgreSQL sweep: the bus woke the pushers.
    command = device.receive(timeout=10)
    assert command is not None and command.cid == cid
    device.respond(command, {"ok": True})
    device.close()
    pushes = [line for s in (a, b) for line in mqtt_lines(s) if line.get("cid") == cid]
    assert len(pushes) == 1 and pushes[0]["status"] == "pushed"
