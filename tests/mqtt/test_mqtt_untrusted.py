"""The broker is not trusted, and delivers at least once; processing is exactly once.

Against the machine's Mosquitto, which lets anyone publish anywhere: the worst broker
a deployment could have. A byte-identical redelivery is answered with the same sealed
reply and stored once; a tampered token, a token moved to another device's topic and a
replay the server no longer has a reply for are refused, logged, and answered with
nothing, and the device carries on undisturbed. A server killed with SIGKILL while
uplinks are in flight gets the unacknowledged ones redelivered from its persistent
session and stores every message exactly once.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hatchway.device import Device, MqttTransport
from hatchway.msgsec import MessageType, seal
from hatchway.server.process import ServerProcess
from tests.mqtt.brokers import wait_mqtt
from tests.mqtt.helpers import Spy, cli, eventually, open_store

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]


def enrol(server: ServerProcess, device_id: str, tmp_path: Path) -> Device:
    secret = str(cli("device", "provision", device_id, data_dir=server.data_dir)["secret"])
    return Device.enroll(
        server=server.https_url,
        device_id=device_id,
        secret=secret,
        state_path=tmp_path / f"{device_id}.json",
        ca_file=server.ca_file,
        transport=MqttTransport(timeout=5),
    )


class Attacker:
    """Anyone on the broker: publishes whatever bytes to whatever topic, QoS 1."""

    def __init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def log_lines(server: ServerProcess) -> list[dict[str, object]]:
    text = server.log_path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def on(spy: Spy, topic: str) -> list[bytes]:
    return [payload for t, payload in spy.messages if t == topic]


def test_redelivery_forgery_misrouting_and_replay(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    spy = Spy(f"{prefix}/#").start()
    a = enrol(server, "meter-a", tmp_path)
    b = enrol(server, "meter-b", tmp_path)
    up_a, down_a = f"{prefix}/d/meter-a/up", f"{prefix}/d/meter-a/down"
    up_b, down_b = f"{prefix}/d/meter-b/up", f"{prefix}/d/meter-b/down"
    a.send({"kwh": 1})
    eventually(lambda: len(on(spy, down_a)) == 1, what="the reply")
    (token,) = on(spy, up_a)
    (reply,) = on(spy, down_a)
    attacker = Attacker()
    try:
        # 1. A byte-identical redelivery: the same sealed reply again, nothing stored.
        attacker.publish(up_a, token)
        eventually(lambda: len(on(spy, down_a)) == 2, what="the repeated reply")
        assert on(spy, down_a)[1] == reply
        # 2. Tampered ciphertext, 3. A's token on B's topic: refused, no answer at all.
        head, key, iv, ciphertext, tag = token.split(b".")
        flipped = bytes([ciphertext[0] ^ 1]) if ciphertext[:1] != b"A" else b"B"
        attacker.publish(up_a, b".".join([head, key, iv, flipped + ciphertext[1:], tag]))
        attacker.publish(up_b, token)
        attacker.publish(up_a, b"x" * 70_000)  # over HATCHWAY_MAX_MESSAGE_SIZE
        eventually(
            lambda: sum(1 for line in log_lines(server) if line.get("status") == "refused") >= 3,
            what="three refusals",
        )
    finally:
        attacker.close()
    with open_store(server.data_dir) as store:
        assert store.count_messages("meter-a") == 1
        assert store.count_messages("meter-b") == 0
    lines = log_lines(server)
    statuses = [line["status"] for line in lines if line.get("listener") == "mqtt"]
    assert statuses.count("redelivery") == 1 and statuses.count("refused") == 3
    rejected = [str(line["msg"]) for line in lines if str(line["msg"]).startswith("message rej")]
    assert any("signed by 'meter-a', sent as 'meter-b'" in m for m in rejected)

    # 4. After a restart the reply cache is gone: the old token is a plain replay.
    server.restart()
    wait_mqtt(server)
    attacker = Attacker()
    attacker.publish(up_a, token)
    attacker.close()
    eventually(
        lambda: sum(1 for line in log_lines(server) if line.get("status") == "refused") >= 4,
        what="the replay's refusal",
    )
    assert any("replay" in str(line["msg"]) for line in log_lines(server)[-20:])

    # The devices saw nothing odd: no stray push, and both carry on as before.
    assert a.receive(timeout=1) is None and b.receive(timeout=0.1) is None
    assert a.send({"kwh": 2}).body["status"] == "stored"
    assert b.send({"kwh": 3}).body["status"] == "stored"
    a.close()
    b.close()
    spy.stop()
    assert on(spy, down_b) == on(spy, down_b)[:1]  # only the reply to b's own message
    assert len(on(spy, down_a)) == 3  # reply, the same reply again, the reply to kwh 2


def presealed(device: Device, count: int) -> list[bytes]:
    """Telemetry sealed now and sent later, as a device with a send queue would."""
    tokens = []
    for i in range(count):
        body = {"mid": uuid.uuid4().hex, "readings": {"i": i}}
        message = device._message(MessageType.TELEMETRY, body, None)
        tokens.append(
            seal(
                message,
                signing_key=device._signing,
                recipient_key=device._server_enc,
                suite=device._suite,
                random=device.random,
            )
        )
    return tokens


def test_server_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    device = enrol(server, "meter-k", tmp_path)
    tokens = presealed(device, 40)
    device.close()
    up = f"{prefix}/d/meter-k/up"
    spy = Spy(f"{prefix}/d/meter-k/down").start()
    attacker = Attacker()  # here simply the device's own publisher
    for token in tokens:
        attacker.client.publish(up, token, qos=1)
    eventually(lambda: len(spy.messages) >= 3, what="the first replies")
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    with open_store(server.data_dir) as store:
        stored_at_kill = store.count_messages("meter-k")
    server.start()  # the same client id: its session's unacknowledged uplinks come back
    try:
        wait_mqtt(server)

        def all_stored() -> bool:
            with open_store(server.data_dir) as store:
                return store.count_messages("meter-k") >= 40

        eventually(all_stored, timeout=60, what="every message stored")
    finally:
        attacker.close()
        spy.stop()
    with open_store(server.data_dir) as store:
        rows = store.list_messages("meter-k", limit=1000)
    mids = [row.body["mid"] for row in rows]
    assert len(rows) == 40 and len(set(mids)) == 40
    assert sorted(row.body["readings"]["i"] for row in rows) == list(range(40))
    assert stored_at_kill < 40  # the kill really was mid-stream


def flip(token: bytes, i: int) -> bytes:
    return token[:i] + bytes([token[i] ^ 0x20]) + token[i + 1 :]


def test_garbage_on_uplinks_is_refused_and_the_server_carries_on(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    """Truncated, spliced, empty, random and oversized payloads, on real and malformed
    topics: each is refused and logged, none is answered, and the device carries on."""
    import random

    device = enrol(server, "meter-g", tmp_path)
    spy = Spy(f"{prefix}/#").start()
    device.send({"n": 0})
    eventually(lambda: len(spy.messages) == 2, what="the first exchange")
    (token,) = on(spy, f"{prefix}/d/meter-g/up")
    rng = random.Random(7)  # a fixed corpus, so a failure replays exactly
    parts = token.split(b".")
    payloads = [
        b"",
        token[: len(token) // 2],
        token + b".",
        b".".join(parts[:4]),
        b".".join([parts[0], parts[1], parts[2], parts[4], parts[3]]),
        b"....",
        b'{"typ": "hatchway-telemetry+jwt"}',
        bytes(rng.getrandbits(8) for _ in range(900)),
        b"A" * 65_536,
        *(flip(token, i) for i in rng.sample(range(len(token)), 12)),
    ]
    up = f"{prefix}/d/meter-g/up"
    attacker = Attacker()
    try:
        for payload in payloads:
            attacker.publish(up, payload)
        for topic in (f"{prefix}/d/meter-g/up/x", f"{prefix}/d/meter-g"):
            attacker.publish(topic, token)  # not uplinks: the subscription never matches
        attacker.publish(f"{prefix}/d/../up", token)  # matches d/+/up, names no device
    finally:
        attacker.close()
    eventually(
        lambda: (
            sum(1 for line in log_lines(server) if line.get("status") == "refused")
            == len(payloads) + 1
        ),
        what="every payload refused",
    )
    assert device.send({"n": 1}).body["status"] == "stored"
    device.close()
    spy.stop()
    assert len(on(spy, f"{prefix}/d/meter-g/down")) == 2  # the two real replies only
    with open_store(server.data_dir) as store:
        assert store.count_messages("meter-g") == 2
