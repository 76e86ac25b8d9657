"""The broker goes away and comes back: the server's gateway and the device's transport
both reconnect by themselves (with back-off), and HTTP is served throughout."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hatchway.device import Device, MqttTransport
from tests.mqtt.brokers import MosquittoProcess, mqtt_server, unique_prefix, wait_mqtt
from tests.mqtt.helpers import cli, eventually

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]


def test_server_and_device_reconnect_after_a_broker_restart(tmp_path: Path) -> None:
    broker = MosquittoProcess(tmp_path / "broker")
    broker.start()
    server = mqtt_server(tmp_path / "data", url=broker.url(), prefix=unique_prefix())
    try:
        server.start()
        wait_mqtt(server)
        secret = str(cli("device", "provision", "meter-c", data_dir=server.data_dir)["secret"])
        device = Device.enroll(
            server=server.https_url,
            device_id="meter-c",
            secret=secret,
            state_path=tmp_path / "meter-c.json",
            ca_file=server.ca_file,
            transport=MqttTransport(timeout=3),
            retry_for=60,
        )
        assert device.send({"n": 1}).body["status"] == "stored"

        broker.stop()
        health = server.http_url + "/healthz"
        eventually(lambda: httpx.get(health).json()["mqtt"] == "connecting", what="the loss")
        assert httpx.get(health).json()["status"] == "ok"  # HTTP carries on
        broker.start()  # the same port, no sessions kept (persistence false)
        wait_mqtt(server, timeout=45)
        # The device's transport reconnects too; its send retries until it does.
        assert device.send({"n": 2}).body["status"] == "stored"
        device.close()
        log = server.log_path.read_text()
        assert "connection to mqtt://127.0.0.1" in log and log.count('"mqtt connected"') >= 2
    finally:
        server.stop()
        broker.stop()
