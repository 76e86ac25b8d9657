"""MQTT over TLS (``mqtts://``) to a broker whose certificate a private CA signed.

Optional, since messages protect themselves, but it keeps broker passwords off the
wire. Mosquitto serves TLS with the certificate hatchway's dev CA issued for localhost;
the server trusts that CA through ``HATCHWAY_MQTT_CA_FILE`` and the device through
``MqttTransport(ca_file=…)``; without it the broker's certificate does not verify.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from hatchway.device import Device, MqttTransport
from hatchway.server.datadir import ensure_data_dir
from tests.mqtt.brokers import MosquittoProcess, mqtt_server, unique_prefix, wait_mqtt
from tests.mqtt.helpers import cli

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]


def test_server_and_device_over_mqtts(tmp_path: Path) -> None:
    identity = ensure_data_dir(tmp_path / "data")  # the server's data dir, made early
    broker = MosquittoProcess(
        tmp_path / "broker", tls=(identity.tls_cert_path, identity.tls_key_path)
    )
    broker.start()
    ca = str(identity.ca_cert_path)
    server = mqtt_server(
        tmp_path / "data", url=broker.url(), prefix=unique_prefix(), HATCHWAY_MQTT_CA_FILE=ca
    )
    try:
        server.start()
        wait_mqtt(server)
        secret = str(cli("device", "provision", "meter-t", data_dir=server.data_dir)["secret"])
        device = Device.enroll(
            server=server.https_url,
            device_id="meter-t",
            secret=secret,
            state_path=tmp_path / "meter-t.json",
            ca_file=server.ca_file,
            transport=MqttTransport(ca_file=ca),
        )
        assert device.state.endpoints["mqtt_broker"] == broker.url()
        assert device.send({"kwh": 4}).body["status"] == "stored"
        device.close()

        # The success above needed the CA file: the system's CAs do not know the dev CA.
        # (Checked with a bare handshake: paho 2.2 leaks the socket of a failed one.)
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost"),
        ):
            pass
    finally:
        server.stop()
        broker.stop()
