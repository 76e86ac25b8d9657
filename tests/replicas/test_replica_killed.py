"""Two replicas, one killed with SIGKILL mid-stream: nothing acknowledged is lost (issue 10 §3).

Two real ``hatchway serve`` replicas share one fresh PostgreSQL database, one MQTT 5
shared subscription on the machine's Mosquitto (topics under a prefix of this test) and
one public HTTP and HTTPS port: a TCP balancer (``balancer.py``), round-robin per
connection. 20 meters stream 2,000 readings, 10 over plain HTTP through the balancer
and 10 over MQTT; every ninth reading's reply is dropped on the way back, so the SDK
retransmits it (same ``mid``), and every tenth MQTT reading is published again, byte
for byte, as a broker redelivery would. After a third of the readings, replica A is
SIGKILLed. Then:

* every reading a meter saw acknowledged is stored exactly once, and none is missing;
* a dropped reply's reading is acknowledged ``duplicate`` on its retransmission;
* tokens the replicas accepted, replayed to the survivor over HTTP and over MQTT, are
  refused (``400 invalid_message``; ``refused`` in the log, nothing published back);
* commands A had pushed before it died are delivered and answered exactly once after
  it died: from the broker's session to a meter that was offline, from the SDK's push
  queue to streaming MQTT meters, and by the survivor's poll to HTTP meters (A claimed
  their commands, and the push went nowhere).

A's session expiry is 2 s (``HATCHWAY_MQTT_SESSION_EXPIRY``): Mosquitto deals a share of
the uplinks to a dead member's session until it expires, and those wait there
unanswered; the meters' retransmissions (3 s transport timeout) reach the survivor.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hatchway.config import settings_from_env
from hatchway.device import Command, Device
from hatchway.errors import InvalidMessage
from hatchway.mqtt.gateway import wake_pushers
from hatchway.mqtt.topics import Topics
from hatchway.server.context import ServerContext
from hatchway.server.process import free_port
from hatchway.store import CommandStatus, Store
from tests.mqtt.brokers import require_system_broker, unique_prefix, wait_mqtt
from tests.mqtt.helpers import Spy, eventually, mqtt_lines
from tests.replicas.balancer import Balancer
from tests.replicas.conftest import _copy_identity, fresh_database, replica_pair
from tests.replicas.fleet import Meter, Progress, RecordingHttp, RecordingMqtt

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.mqtt]

METERS_PER_TRANSPORT = 10
READINGS = 100  # per meter: 2,000 in all
KILL_AT = 2 * METERS_PER_TRANSPORT * READINGS // 3
SLEEPERS = 3
STREAM_DEADLINE = 80.0
JOSE = {"content-type": "application/jose"}


def lose(i: int) -> bool:
    return i % 9 == 4


def redeliver(i: int) -> bool:
    return i % 10 == 7


class Site:
    """Replica A (started first), replica B (a copy of A's identity), the balancers."""

    def __init__(self, root: Path, database_url: str, stack: ExitStack) -> None:
        self.prefix = unique_prefix()
        self.topics = Topics(self.prefix)
        a_https, a_http, b_https, b_http = (free_port() for _ in range(4))
        self.https_lb = stack.enter_context(Balancer([a_https, b_https], lifetime=240))
        self.http_lb = stack.enter_context(Balancer([a_http, b_http], lifetime=240))
        env = {
            "HATCHWAY_DATABASE_URL": database_url,
            "HATCHWAY_PUBLIC_HTTPS_URL": f"https://localhost:{self.https_lb.port}",
            "HATCHWAY_PUBLIC_HTTP_URL": f"http://localhost:{self.http_lb.port}",
            "HATCHWAY_MQTT_URL": require_system_broker(),
            "HATCHWAY_MQTT_TOPIC_PREFIX": self.prefix,
            "HATCHWAY_MQTT_SESSION_EXPIRY": "2",
        }
        self.a, self.b = replica_pair(
            root, env, name="hw-kill", a_ports=(a_https, a_http), b_ports=(b_https, b_http)
        )
        stack.callback(self.b.stop)
        stack.callback(self.a.stop)
        self.public_https = env["HATCHWAY_PUBLIC_HTTPS_URL"]
        self.public_http = env["HATCHWAY_PUBLIC_HTTP_URL"]

    def start_a(self) -> None:
        self.a.start()
        wait_mqtt(self.a)

    def start_b(self) -> None:
        _copy_identity(self.a.data_dir, self.b.data_dir)
        self.b.start()
        wait_mqtt(self.b)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with fresh_database("hw_kill") as url, ExitStack() as stack:
        yield Site(tmp_path, url, stack)


def enrol(site: Site, ops: ServerContext, root: Path, name: str, kind: str) -> Meter:
    secret = ops.enrolment.provision(name)
    wire = (
        RecordingHttp(timeout=5.0)
        if kind == "http"
        else RecordingMqtt(timeout=3.0, session_expiry=30)
    )
    device = Device.enroll(
        server=site.public_https,
        device_id=name,
        secret=secret,
        state_path=root / f"{name}.json",
        ca_file=site.a.ca_file,
        transport=wire,
        retry_for=60.0,
    )
    return Meter(name, kind, device, wire)


def queue(ops: ServerContext, meter: str) -> str:
    """What ``hatchway device command`` does: queue in the store, wake the pushers."""
    cid = ops.store.queue_command(meter, {"op": "read-register", "for": meter}, now=time.time())
    wake_pushers(ops.bus, meter)
    return cid


def answer(device: Device, command: Command | None, expected: str) -> None:
    assert command is not None and command.cid == expected
    assert device.respond(command, {"done": command.cid}).body["status"] == "recorded"


def test_a_replica_killed_mid_stream_loses_nothing(site: Site, tmp_path: Path) -> None:
    site.start_a()
    ops = ServerContext.create(settings_from_env(site.a.env()))
    publisher = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    everyone: list[Meter] = []
    try:
        _run(site, ops, publisher, everyone, tmp_path)
    finally:
        for meter in everyone:
            with contextlib.suppress(Exception):  # some were closed already
                meter.device.close()
        publisher.disconnect()
        publisher.loop_stop()
        ops.close()
        asyncio.run(ops.bus.close())  # its pooled NOTIFY connection


def _run(
    site: Site, ops: ServerContext, publisher: paho.Client, everyone: list[Meter], root: Path
) -> None:
    # -- Only A runs: enrol through the balancer, reading 0 of every meter, commands.
    names = [
        (f"{kind}-{n:02d}-{secrets.token_hex(3)}", kind)
        for kind in ("http", "mqtt")
        for n in range(METERS_PER_TRANSPORT)
    ]
    sleeper_names = [(f"sleeper-{n}-{secrets.token_hex(3)}", "mqtt") for n in range(SLEEPERS)]
    with ThreadPoolExecutor(4) as pool:
        enrolled = list(pool.map(lambda nk: enrol(site, ops, root, *nk), names + sleeper_names))
    everyone.extend(enrolled)
    meters, sleepers = enrolled[: len(names)], enrolled[len(names) :]
    for meter in enrolled:
        meter.acked[0] = str(meter.device.send({"meter": meter.name, "i": 0}).body["status"])
    for sleeper in sleepers:
        sleeper.device.close()  # offline; its persistent session stays with the broker

    http_meters = [m for m in meters if m.transport == "http"]
    mqtt_meters = [m for m in meters if m.transport == "mqtt"]
    commanded = [*sleepers, *http_meters[:3], *mqtt_meters[:3]]
    cids = {meter.name: queue(ops, meter.name) for meter in commanded}
    eventually(
        lambda: {line.get("cid") for line in mqtt_lines(site.a)} >= set(cids.values()),
        timeout=15,
        what="A pushing every command",
    )

    # -- B joins; 20 meters stream; A is SIGKILLed after a third of the readings.
    site.start_b()
    progress = Progress()
    for _ in meters:
        progress()  # reading 0
    redelivered: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def after_ack(meter: Meter, i: int, token: bytes) -> None:
        if meter.transport == "mqtt" and redeliver(i):
            with lock:
                redelivered.append((meter.name, token))
            publisher.publish(site.topics.uplink(meter.name), token, qos=1)

    threads = [
        threading.Thread(
            target=meter.stream,
            args=(range(1, READINGS),),
            kwargs={"lose": lose, "after_ack": after_ack, "progress": progress},
            name=meter.name,
            daemon=True,
        )
        for meter in meters
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    assert progress.wait_for(KILL_AT, timeout=STREAM_DEADLINE), f"only {progress.count} acked"
    killed_at = progress.count
    assert site.a.stop(signal.SIGKILL) == -signal.SIGKILL
    for thread in threads:
        thread.join(max(0.0, started + STREAM_DEADLINE - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"stream unfinished: {progress.count} acked"
    assert [m.error for m in meters if m.error] == []
    elapsed = time.monotonic() - started
    print(f"A killed after {killed_at} acks; {progress.count} acked in {elapsed:.1f}s")

    # -- Every acknowledged reading is stored exactly once; none is missing.
    store = Store.open(site.b.env()["HATCHWAY_DATABASE_URL"])
    try:
        _stored_exactly_once(store, meters)
        # -- Commands A pushed before it died: delivered and answered exactly once.
        _commands_survive(site, store, cids, sleepers, http_meters[:3], mqtt_meters[:3], root)
        # -- Accepted tokens replayed to the survivor: refused over HTTP and MQTT.
        before = {m.name: store.count_messages(m.name) for m in meters}
        _replays_refused(site, publisher, meters)
        assert {m.name: store.count_messages(m.name) for m in meters} == before
    finally:
        store.close()

    statuses = Counter(line["status"] for s in (site.a, site.b) for line in mqtt_lines(s))
    print(f"MQTT uplinks by status: {dict(statuses)}; {len(redelivered)} published twice")
    assert redelivered
    failed: Counter[str] = Counter()
    for meter in meters:
        failed[meter.transport] += meter.wire.failures
    print(f"requests that failed and were retransmitted (same mid): {dict(failed)}")
    # Mosquitto dealt uplinks to A's dead session until it expired: those timed out.
    assert failed["mqtt"] > 0
    assert site.http_lb.piped[site.b.http_port] > 0 and site.http_lb.refused[site.a.http_port] > 0


def _stored_exactly_once(store: Store, meters: list[Meter]) -> None:
    duplicates = 0
    for meter in meters:
        assert sorted(meter.acked) == list(range(READINGS)), meter.name
        records = store.list_messages(meter.name, limit=10 * READINGS)
        readings = Counter(
            int(r.body["readings"]["i"]) for r in records if r.typ == "hatchway-telemetry+jwt"
        )
        assert readings == Counter(range(READINGS)), meter.name  # each once, none missing
        # A reading whose reply was dropped was stored by its first copy.
        assert {meter.acked[i] for i in meter.lost} <= {"duplicate"}, meter.name
        assert set(meter.acked.values()) <= {"stored", "duplicate"}
        duplicates += sum(1 for status in meter.acked.values() if status == "duplicate")
    lost = sum(len(m.lost) for m in meters)
    assert lost > 0 and duplicates >= lost
    print(f"{duplicates} readings acknowledged as duplicates ({lost} replies dropped on purpose)")


def _commands_survive(
    site: Site,
    store: Store,
    cids: dict[str, str],
    sleepers: list[Meter],
    http_meters: list[Meter],
    mqtt_meters: list[Meter],
    root: Path,
) -> None:
    # Streaming MQTT meters got A's push while A was alive, but left it in the SDK's
    # queue while ~100 acknowledgements went by: its seq is now older than the
    # device's replay window, so it does not open (the SDK's documented case), and
    # the meter polls: B seals the command afresh.
    for meter in mqtt_meters:
        with pytest.raises(InvalidMessage):
            meter.device.receive(timeout=10)
        answer(meter.device, meter.device.poll(), cids[meter.name])
    # HTTP meters: A claimed their commands (the push had no subscriber); B's poll
    # delivers them.
    for meter in http_meters:
        answer(meter.device, meter.device.poll(), cids[meter.name])
    # Sleepers wake up after A died: the broker hands over what A pushed to their
    # sessions while they were offline (this session now ends when they disconnect).
    for sleeper in sleepers:
        wire = RecordingMqtt(timeout=3.0, session_expiry=0)
        sleeper.device = Device.load(root / f"{sleeper.name}.json", transport=wire, retry_for=30.0)
        sleeper.wire = wire
        answer(sleeper.device, sleeper.device.receive(timeout=10), cids[sleeper.name])
    # Exactly once: no second delivery by push or poll, one result each.
    for meter in [*mqtt_meters, *sleepers]:
        assert meter.device.receive(timeout=0.5) is None
    for meter in [*mqtt_meters, *http_meters, *sleepers]:
        assert meter.device.poll() is None
    for name, cid in cids.items():
        record = store.get_command(cid)
        assert record is not None and record.device_id == name
        assert record.status is CommandStatus.DONE and record.result is not None
        assert record.result["result"] == {"done": cid}
    pushes = Counter(
        line["cid"] for s in (site.a, site.b) for line in mqtt_lines(s) if line.get("cid")
    )
    assert {cid: pushes[cid] for cid in cids.values()} == dict.fromkeys(cids.values(), 1)


def _replays_refused(site: Site, publisher: paho.Client, meters: list[Meter]) -> None:
    replays = [(m, t) for m in meters for t in (m.wire.accepted[0], m.wire.accepted[-1])]
    replays += [(m, t) for m in meters for t in m.wire.lost[:2]]
    with httpx.Client(timeout=10) as http:
        for _, token in replays:
            answer = http.post(site.public_http + "/m", content=token, headers=JOSE)
            assert (answer.status_code, answer.json()) == (400, {"error": "invalid_message"})

    # Over MQTT: tokens the survivor never answered over MQTT (read 0 went to A, the only
    # replica then; HTTP tokens never pass the gateway), so no redelivery cache hides them.
    on_mqtt = [(m, m.wire.accepted[0]) for m in meters if m.transport == "mqtt"]
    on_mqtt += [(m, t) for m, t in replays if m.transport == "http"]
    spy = Spy(f"{site.prefix}/d/+/down").start()
    try:
        refused = sum(1 for line in mqtt_lines(site.b) if line["status"] == "refused")
        for meter, token in on_mqtt:
            publisher.publish(site.topics.uplink(meter.name), token, qos=1).wait_for_publish(5)
        eventually(
            lambda: (
                sum(1 for line in mqtt_lines(site.b) if line["status"] == "refused")
                >= refused + len(on_mqtt)
            ),
            timeout=15,
            what="the survivor refusing every replay",
        )
        time.sleep(0.5)
        assert spy.messages == []  # the device sees nothing odd
    finally:
        spy.stop()
