"""Issue 2 "done when": a real ``hatchway serve`` subprocess over real sockets.

Enrol over TLS (then TLS closes), 100 sealed messages over plain HTTP, a queued command
round trip, a replay refused, and a server restart mid-stream with no replay accepted
and no message lost.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hatchway.config import settings_from_env
from hatchway.device import Device, EnrolmentError, HttpTransport
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess

pytestmark = pytest.mark.e2e

JOSE = {"content-type": "application/jose"}


class Recorder:
    def __init__(self) -> None:
        self.inner = HttpTransport()
        self.tokens: list[bytes] = []
        self.urls: set[str] = set()

    def __call__(self, url: str, token: bytes) -> bytes:
        self.tokens.append(token)
        self.urls.add(url)
        return self.inner(url, token)

    def close(self) -> None:
        self.inner.close()


def cli(*args: str, data_dir: Path, stdin: str = "") -> dict[str, object]:
    env = {"HATCHWAY_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # run the code under test, not the installed copy
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", *args, "--json"],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def context(server: ServerProcess) -> ServerContext:
    return ServerContext.create(settings_from_env({"HATCHWAY_DATA_DIR": str(server.data_dir)}))


def test_enrol_send_command_replay_restart(server: ServerProcess, tmp_path: Path) -> None:
    provisioned = cli("device", "provision", "meter-001", data_dir=server.data_dir)
    secret = str(provisioned["secret"])

    recorder = Recorder()
    device = Device.enroll(
        server=server.https_url,
        device_id="meter-001",
        secret=secret,
        state_path=tmp_path / "meter-001.json",
        ca_file=server.ca_file,
        transport=recorder,
    )
    assert (tmp_path / "meter-001.json").stat().st_mode & 0o777 == 0o600

    # The credential works once only.
    with pytest.raises(EnrolmentError, match="invalid_grant"):
        Device.enroll(
            server=server.https_url,
            device_id="meter-001",
            secret=secret,
            state_path=tmp_path / "again.json",
            ca_file=server.ca_file,
        )

    # Everything after enrolment goes to the plain listener: no TLS.
    for i in range(100):
        ack = device.send({"kwh": 12.5, "n": i})
        assert ack.in_reply_to is not None
    assert recorder.urls == {server.http_url + "/m"}
    assert all(not t.startswith(b"{") and t.count(b".") == 4 for t in recorder.tokens)

    # A replay of a captured message is refused with the uniform error.
    replay = recorder.tokens[-1]
    answer = httpx.post(server.http_url + "/m", content=replay, headers=JOSE)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_message"}

    # Operator queues a command through the CLI; the device receives it sealed.
    queued = cli(
        "device",
        "command",
        "meter-001",
        '{"op": "set-interval", "seconds": 60}',
        data_dir=server.data_dir,
    )
    command = device.poll()
    assert command is not None and command.cid == queued["cid"]
    assert command.body["op"] == "set-interval"
    device.respond(command, {"ok": True})
    assert device.poll() is None

    # Restart mid-stream: a sender thread keeps going while the server is stopped and started.
    sent: list[int] = []
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            for i in range(100, 200):
                device.send({"kwh": 1.0, "n": i})
                sent.append(i)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    while len(sent) < 40 and thread.is_alive():
        time.sleep(0.01)
    assert server.restart() == 0  # SIGTERM: a clean exit
    thread.join(timeout=120)
    assert not errors, errors
    assert sent == list(range(100, 200))

    # Nothing lost and nothing stored twice; old replays still refused after the restart.
    ctx = context(server)
    try:
        stored = ctx.store.list_messages("meter-001", limit=1000)
        telemetry = [m.body["readings"]["n"] for m in stored if m.typ == "hatchway-telemetry+jwt"]
        assert sorted(telemetry) == list(range(200))
        result = ctx.store.get_command(str(queued["cid"]))
        assert result is not None and result.result is not None
    finally:
        ctx.close()
    for token in (recorder.tokens[0], replay, recorder.tokens[-1]):
        again = httpx.post(server.http_url + "/m", content=token, headers=JOSE)
        assert again.status_code == 400
    device.close()


def test_metadata_and_jwks(server: ServerProcess) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    meta = httpx.get(
        server.https_url + "/.well-known/oauth-authorization-server", verify=ctx
    ).json()
    assert meta["issuer"] == server.https_url
    assert meta["hatchway_message_endpoint"] == server.http_url + "/m"
    jwks = httpx.get(meta["jwks_uri"], verify=ctx).json()
    assert {k["use"] for k in jwks["keys"]} == {"sig", "enc"}
    assert all("d" not in k for k in jwks["keys"])


def test_cli_device_flow(server: ServerProcess, tmp_path: Path) -> None:
    secret = cli("device", "provision", "meter-002", data_dir=server.data_dir)["secret"]
    state = tmp_path / "meter-002.json"
    enrolled = cli(
        "device",
        "enroll",
        "--server",
        server.https_url,
        "--device-id",
        "meter-002",
        "--state",
        str(state),
        "--ca",
        str(server.ca_file),
        data_dir=server.data_dir,
        stdin=f"{secret}\n",
    )
    assert enrolled["device_id"] == "meter-002"
    sent = cli("device", "send", "--state", str(state), '{"kwh": 12.5}', data_dir=server.data_dir)
    assert sent["acknowledged"] is True
    cli("device", "command", "meter-002", '{"op": "reboot"}', data_dir=server.data_dir)
    polled = cli(
        "device",
        "poll",
        "--state",
        str(state),
        "--result",
        '{"ok": true}',
        data_dir=server.data_dir,
    )
    assert polled["command"]["op"] == "reboot" and polled["answered"] is True
    listed = cli("device", "list", data_dir=server.data_dir)
    assert {"device_id": "meter-002", "status": "enrolled", "messages": 3} in listed["devices"]


def test_one_structured_log_line_per_request(server: ServerProcess) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    for _ in range(3):
        httpx.get(server.https_url + "/jwks.json", verify=ctx).raise_for_status()
    httpx.post(server.http_url + "/m", content=b"junk", headers=JOSE)

    def access_lines() -> list[dict[str, object]]:
        lines = []
        for raw in server.log_path.read_text().splitlines():
            if raw.startswith("{"):
                record = json.loads(raw)  # every line the server writes is JSON
                if record.get("logger") == "hatchway.access":
                    lines.append(record)
        return lines

    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline
        and len([r for r in access_lines() if r["path"] in ("/jwks.json", "/m")]) < 4
    ):
        time.sleep(0.05)
    jwks = [r for r in access_lines() if r["path"] == "/jwks.json"]
    refused = [r for r in access_lines() if r["path"] == "/m"]
    assert len(jwks) == 3 and len(refused) == 1
    assert {(r["listener"], r["method"], r["status"]) for r in jwks} == {("https", "GET", 200)}
    assert (refused[0]["listener"], refused[0]["status"]) == ("plain", 400)
    assert all(isinstance(r["ms"], float | int) and r["client"] == "127.0.0.1" for r in jwks)
