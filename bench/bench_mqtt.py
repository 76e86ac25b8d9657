"""Sealed messages per second over MQTT, against plain HTTP keep-alive in the same run.

One real ``hatchway serve`` (SQLite) with the MQTT gateway on the machine's Mosquitto.
The messages are sealed before the clock starts (telemetry from a few enrolled
devices). Baseline: the same number of other pre-sealed messages POSTed one after
another over one keep-alive HTTP connection. MQTT: all published QoS 1 at once from
one client (with correlation data), timed until every sealed reply has arrived on
the downlinks. Prints messages/s for each and the ratio MQTT / HTTP.

    .venv/bin/python bench/bench_mqtt.py [--messages N] [--devices D]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hatchway.device import Device, HttpTransport, MqttTransport
from hatchway.msgsec import MessageType, seal
from hatchway.server.process import ServerProcess

BROKER = ("127.0.0.1", 1883)


def presealed(device: Device, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        body = {"mid": uuid.uuid4().hex, "readings": {"i": i}}
        message = device._message(MessageType.TELEMETRY, body, None)
        out.append(
            seal(
                message,
                signing_key=device._signing,
                recipient_key=device._server_enc,
                suite=device._suite,
                random=device.random,
            )
        )
    return out


def provision(data_dir: Path, device_id: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", "device", "provision", device_id, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HATCHWAY_DATA_DIR": str(data_dir)},
        check=True,
    )
    return str(json.loads(done.stdout)["secret"])


def run_http(server: ServerProcess, tokens: list[bytes]) -> float:
    transport = HttpTransport()
    url = server.http_url + "/m"
    start = time.perf_counter()
    for token in tokens:
        transport(url, token)
    elapsed = time.perf_counter() - start
    transport.close()
    return len(tokens) / elapsed


def run_mqtt(prefix: str, per_device: dict[str, list[bytes]]) -> float:
    total = sum(len(t) for t in per_device.values())
    replies = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal replies
        replies += 1
        if replies == total:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.max_inflight_messages_set(100)
    client.connect(*BROKER)
    client.loop_start()
    client.subscribe(f"{prefix}/d/+/down", qos=1)
    subscribed.wait(10)
    start = time.perf_counter()
    for device_id, tokens in per_device.items():
        for token in tokens:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = secrets.token_bytes(16)
            client.publish(f"{prefix}/d/{device_id}/up", token, qos=1, properties=props)
    finished = done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise SystemExit(f"only {replies} of {total} replies arrived")
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--devices", type=int, default=4)
    args = parser.parse_args()
    per = args.messages // args.devices
    prefix = f"bench{secrets.token_hex(3)}/hatchway"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            "HATCHWAY_MQTT_URL": f"mqtt://{BROKER[0]}:{BROKER[1]}",
            "HATCHWAY_MQTT_TOPIC_PREFIX": prefix,
            "HATCHWAY_MQTT_CLIENT_ID": f"bench-{secrets.token_hex(4)}",
            "HATCHWAY_LOG_LEVEL": "warning",
        }
        with ServerProcess(root / "data", env=env) as server:
            while httpx.get(server.http_url + "/healthz").json().get("mqtt") != "connected":
                time.sleep(0.1)
            http_tokens: list[bytes] = []
            mqtt_tokens: dict[str, list[bytes]] = {}
            for n in range(args.devices):
                device_id = f"bench-{n}"
                device = Device.enroll(
                    server=server.https_url,
                    device_id=device_id,
                    secret=provision(server.data_dir, device_id),
                    state_path=root / f"{device_id}.json",
                    ca_file=server.ca_file,
                    transport=MqttTransport(persistent=False),
                )
                # Sealed in this order, sent in this order: within every replay window.
                http_tokens += presealed(device, per)
                mqtt_tokens[device_id] = presealed(device, per)
                device.close()
            # HTTP first: its tokens carry the lower sequence numbers of each device.
            http_rate = run_http(server, http_tokens)
            mqtt_rate = run_mqtt(prefix, mqtt_tokens)
    print(f"messages: {per * args.devices} per transport, {args.devices} devices (SQLite)")
    print(f"HTTP keep-alive, one connection, sequential: {http_rate:8.1f} messages/s")
    print(f"MQTT QoS 1, one publisher, all in flight:    {mqtt_rate:8.1f} messages/s")
    print(f"ratio MQTT / HTTP: {mqtt_rate / http_rate:.2f}")


if __name__ == "__main__":
    main()
