"""Issue 10 §2 "done when": a device on MQTT enrols (HTTPS), sends, receives a pushed
command and answers it, against the real Mosquitto and a real ``hatchway serve``.

Also: a command queued while the device is offline reaches it from its persistent
session when it reconnects (no poll: the delivery's jti is the push's), a subscriber
on ``#`` sees only JWEs, and the CLI's ``--transport mqtt`` and ``device listen``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hatchway.device import Device, MqttTransport
from hatchway.server.process import ServerProcess
from hatchway.store import CommandStatus
from tests.mqtt.brokers import mqtt_server, require_system_broker, wait_mqtt
from tests.mqtt.helpers import Spy, cli, eventually, is_compact_jwe, open_store

pytestmark = [pytest.mark.mqtt, pytest.mark.e2e]

METADATA = "/.well-known/oauth-authorization-server"


def command_status(server: ServerProcess, cid: str) -> CommandStatus | None:
    with open_store(server.data_dir) as store:
        record = store.get_command(cid)
    return None if record is None else record.status


def test_enrol_send_pushed_command_and_answer(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> None:
    spy = Spy(f"{prefix}/#").start()
    # A device id of its own: the MQTT client id is the device id, and a persistent
    # session shared with a concurrent run on the same broker would take its pushes.
    dev = f"meter-{secrets.token_hex(4)}"
    secret = str(cli("device", "provision", dev, data_dir=server.data_dir)["secret"])
    context = ssl.create_default_context(cafile=str(server.ca_file))
    meta = httpx.get(server.https_url + METADATA, verify=context).json()
    assert meta["hatchway_mqtt_broker"] == "mqtt://127.0.0.1:1883"
    assert meta["hatchway_mqtt_uplink_topic"] == f"{prefix}/d/{{device_id}}/up"
    assert meta["hatchway_mqtt_downlink_topic"] == f"{prefix}/d/{{device_id}}/down"

    state = tmp_path / f"{dev}.json"
    # No broker given: the transport uses the one enrolment named.
    device = Device.enroll(
        server=server.https_url,
        device_id=dev,
        secret=secret,
        state_path=state,
        ca_file=server.ca_file,
        transport=MqttTransport(),
    )
    assert device.state.endpoints["mqtt_uplink"] == f"{prefix}/d/{dev}/up"
    assert device.state.endpoints["mqtt_downlink"] == f"{prefix}/d/{dev}/down"
    assert device.state.endpoints["mqtt_broker"] == "mqtt://127.0.0.1:1883"

    ack = device.send({"kwh": 12.5})
    assert ack.body["status"] == "stored"

    # Pushed while the device is online.
    cid = str(
        cli("device", "command", dev, '{"op": "ping"}', data_dir=server.data_dir)["cid"]
    )
    command = device.receive(timeout=20)
    assert command is not None and command.cid == cid
    assert command.body["op"] == "ping"
    assert command.message.in_reply_to is None  # server-initiated, not a poll reply
    assert device.respond(command, {"pong": True}).body["status"] == "recorded"
    assert command_status(server, cid) is CommandStatus.DONE

    # Queued while the device is offline: its persistent session keeps the push.
    device.close()
    cid2 = str(
        cli(
            "device",
            "command",
            dev,
            '{"op": "set-interval", "seconds": 60}',
            data_dir=server.data_dir,
        )["cid"]
    )
    eventually(lambda: command_status(server, cid2) is CommandStatus.DELIVERED, what="the push")
    device = Device.load(state, transport=MqttTransport())
    command = device.receive(timeout=20)
    assert command is not None and command.cid == cid2
    with open_store(server.data_dir) as store:
        record = store.get_command(cid2)
        assert record is not None and record.delivery_jti == command.message.jti
    assert command.body["args"] == {"seconds": 60}
    device.respond(command, {"interval": 60})
    device.close()
    assert command_status(server, cid2) is CommandStatus.DONE
    with open_store(server.data_dir) as store:
        kinds = sorted(m.typ for m in store.list_messages(dev))
    assert kinds == ["hatchway-command-result+jwt"] * 2 + ["hatchway-telemetry+jwt"]

    # The broker saw only sealed tokens: no reading, no command, no result in clear.
    spy.stop()
    payloads = [payload for _, payload in spy.messages]
    assert len(payloads) >= 8  # 3 requests + 3 replies + 2 pushes
    assert all(is_compact_jwe(p) for p in payloads)
    assert not any(b"12.5" in p or b"set-interval" in p or b"pong" in p for p in payloads)

    log = server.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mqtt_lines = [line for line in lines if line.get("listener") == "mqtt"]
    assert {line["status"] for line in mqtt_lines} >= {"ok", "pushed"}


def test_cli_send_poll_and_listen(server: ServerProcess, tmp_path: Path, prefix: str) -> None:
    data = server.data_dir
    secret = str(cli("device", "provision", "meter-002", data_dir=data)["secret"])
    state = tmp_path / "meter-002.json"
    env = {"HATCHWAY_ENROLMENT_SECRET": secret, "HATCHWAY_CA_FILE": str(server.ca_file)}
    cli(
        "device",
        "enroll",
        "--server",
        server.https_url,
        "--device-id",
        "meter-002",
        "--state",
        str(state),
        data_dir=data,
        env=env,
    )
    broker = "mqtt://127.0.0.1:1883"
    sent = cli(
        "device",
        "send",
        "--state",
        str(state),
        "--transport",
        "mqtt",
        "--broker",
        broker,
        '{"kwh": 1}',
        data_dir=data,
    )
    assert sent["acknowledged"] is True

    # poll over MQTT (a one-shot session): receive and answer.
    cid = str(cli("device", "command", "meter-002", '{"op": "a"}', data_dir=data)["cid"])
    polled = cli(
        "device",
        "poll",
        "--state",
        str(state),
        "--transport",
        "mqtt",
        "--result",
        '{"r": 1}',
        data_dir=data,
    )
    assert polled["command"]["cid"] == cid and polled["answered"] is True
    eventually(lambda: command_status(server, cid) is CommandStatus.DONE, what="the answer")

    # listen: prints commands as they arrive, answers them, stops on SIGTERM. A command
    # queued before the device ever held a persistent session was pushed to nobody:
    # listen's start-up catch-up poll finds it.
    early = str(cli("device", "command", "meter-002", '{"op": "early"}', data_dir=data)["cid"])
    eventually(lambda: command_status(server, early) is CommandStatus.DELIVERED, what="push")
    errors = (tmp_path / "listen.err").open("w")
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hatchway",
            "device",
            "listen",
            "--state",
            str(state),
            "--result",
            '{"done": true}',
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env={**os.environ, "HATCHWAY_DATA_DIR": str(data)},
    )
    errors.close()
    try:
        assert listener.stdout is not None
        hello = json.loads(listener.stdout.readline())
        assert hello == {"listening": "meter-002", "downlink": f"{prefix}/d/meter-002/down"}
        assert json.loads(listener.stdout.readline())["cid"] == early
        cid = str(cli("device", "command", "meter-002", '{"op": "b"}', data_dir=data)["cid"])
        line = json.loads(listener.stdout.readline())
        assert line["cid"] == cid and line["command"]["op"] == "b" and line["ok"] is True
        eventually(lambda: command_status(server, cid) is CommandStatus.DONE, what="answer")
        listener.send_signal(signal.SIGTERM)
        assert listener.wait(20) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        assert listener.stdout is not None
        listener.stdout.close()
    with open_store(data) as store:
        record = store.get_command(cid)
    assert record is not None and record.result is not None
    assert record.result["result"] == {"done": True}


def test_listen_catches_up_on_pushes_that_expired_while_offline(
    tmp_path: Path, prefix: str
) -> None:
    """Queued pushes older than their sealed lifetime cannot be opened; ``listen`` then
    polls, which re-seals each pending command, and answers them all (with no start-up
    poll, the command pushed before the session existed is found only that way)."""
    url = require_system_broker()
    server = mqtt_server(tmp_path / "data", url=url, prefix=prefix, HATCHWAY_MESSAGE_TTL="10")
    server.start()
    try:
        wait_mqtt(server)
        data = server.data_dir
        secret = str(cli("device", "provision", "meter-s", data_dir=data)["secret"])
        state = tmp_path / "meter-s.json"
        device = Device.enroll(
            server=server.https_url,
            device_id="meter-s",
            secret=secret,
            state_path=state,
            ca_file=server.ca_file,
            transport=MqttTransport(),
        )
        # Queued before the device has a session: pushed to nobody; only a poll finds it.
        cids = [str(cli("device", "command", "meter-s", '{"op": "0"}', data_dir=data)["cid"])]
        device.send({"hello": 1})  # now the persistent session exists
        device.close()
        cids += [
            str(cli("device", "command", "meter-s", f'{{"op": "{op}"}}', data_dir=data)["cid"])
            for op in ("first", "second")
        ]
        for cid in cids:
            eventually(lambda cid=cid: command_status(server, cid) is CommandStatus.DELIVERED)
        time.sleep(11)  # both queued pushes are now past their `exp`
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hatchway",
                "device",
                "listen",
                "--state",
                str(state),
                "--count",
                "3",
                "--no-catch-up",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HATCHWAY_DATA_DIR": str(data)},
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert [line["cid"] for line in lines[1:]] == cids
        for cid in cids:
            assert command_status(server, cid) is CommandStatus.DONE
    finally:
        server.stop()
