"""Issue 9 "Key rotation" against a real ``hatchway serve``: traffic through the overlap.

Device keys: messages sealed under the old key before the rotation and delivered
during the overlap are stored, after it refused; nothing is lost and no replay gets
in. Server keys: ``hatchway keys rotate`` while a device sends in a loop; it learns
the new keys from a reply and switches; a device still on the old keys is served
during the overlap and refused after it. Overlaps are seconds long (settings), so the
test does not wait long; every wait is bounded.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hatchway.device import Device, HttpTransport, MessageRejected
from hatchway.errors import InvalidMessage
from hatchway.msgsec import Message, MessageType, seal
from hatchway.runtime import system_random
from hatchway.server.process import ServerProcess
from hatchway.store import Store
from tests.e2e.test_msgsec_e2e import JOSE, Recorder, cli

pytestmark = pytest.mark.e2e

DEVICE_OVERLAP = 4
SERVER_OVERLAP = 5


@pytest.fixture
def rotating_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path / "data",
        env={
            "HATCHWAY_DEVICE_KEY_OVERLAP": str(DEVICE_OVERLAP),
            "HATCHWAY_SERVER_KEY_REFRESH": "1",
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def enrolled(server: ServerProcess, device_id: str, tmp_path: Path) -> tuple[Device, Recorder]:
    secret = str(cli("device", "provision", device_id, data_dir=server.data_dir)["secret"])
    recorder = Recorder()
    device = Device.enroll(
        server=server.https_url,
        device_id=device_id,
        secret=secret,
        state_path=tmp_path / f"{device_id}.json",
        ca_file=server.ca_file,
        transport=recorder,
    )
    return device, recorder


def hold(device: Device, n: int) -> list[bytes]:
    """``n`` telemetry messages sealed now and delivered later (store-and-forward)."""
    held: list[bytes] = []
    real = device._transport
    device._transport = lambda url, token: (held.append(token), b"")[1]
    try:
        for i in range(n):
            with pytest.raises(InvalidMessage):
                device.send({"held": i})
    finally:
        device._transport = real
    return held


def post(server: ServerProcess, token: bytes) -> int:
    return httpx.post(server.http_url + "/m", content=token, headers=JOSE, timeout=10).status_code


def stored(server: ServerProcess, device_id: str) -> int:
    with Store.open(f"sqlite:///{server.data_dir / 'hatchway.sqlite3'}") as store:
        return store.count_messages(device_id)


def wait_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()))


def test_device_key_rotation_with_traffic_through_the_overlap(
    rotating_server: ServerProcess, tmp_path: Path
) -> None:
    server = rotating_server
    device, recorder = enrolled(server, "meter-rot", tmp_path)
    for i in range(10):
        device.send({"before": i})
    old_key = device._signing
    held = hold(device, 5)  # sealed under the old key, not yet delivered

    reply = device.rotate_keys()
    rotated_at = time.time()
    assert reply.typ is MessageType.KEY_ROTATED and device._signing.kid != old_key.kid

    # During the overlap: new-key traffic from the device, old-key messages arriving.
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            for i in range(20):
                device.send({"after": i})
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    assert [post(server, token) for token in held] == [200] * 5
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    assert time.time() < rotated_at + DEVICE_OVERLAP, "the test machine was too slow"

    # After the overlap the old key opens nothing; the new one keeps working.
    wait_until(rotated_at + DEVICE_OVERLAP + 0.5)
    now = int(time.time())
    late = Message(
        typ=MessageType.TELEMETRY,
        iss=device.device_id,
        aud=device.server_id,
        iat=now,
        exp=now + 60,
        jti=system_random(16).hex(),
        seq=device._file.next_seq(),
        body={"readings": {"late": True}},
    )
    token = seal(
        late,
        signing_key=old_key,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=system_random,
    )
    assert post(server, token) == 400
    device.send({"final": True})

    # No replay of anything sent gets in, under either key.
    for token in [*held, *recorder.tokens]:
        assert post(server, token) == 400
    # 10 before + 5 held + the rotation + 20 after + 1 final; nothing lost, nothing twice.
    assert stored(server, "meter-rot") == 37
    device.close()


def test_server_key_rotation_with_traffic_through_the_overlap(
    rotating_server: ServerProcess, tmp_path: Path
) -> None:
    server = rotating_server
    busy, busy_tokens = enrolled(server, "meter-busy", tmp_path)
    sleepy, _ = enrolled(server, "meter-sleepy", tmp_path)
    old_kid = busy._server.verifying_key.kid
    sleepy_held = hold(sleepy, 3)  # sealed to the old server key

    acks: list[MessageType] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def sender() -> None:
        try:
            while not stop.is_set():
                acks.append(busy.send({"n": len(acks)}).typ)
                time.sleep(0.02)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    deadline = time.monotonic() + 30
    while len(acks) < 10 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    rotated = cli("keys", "rotate", "--overlap", f"{SERVER_OVERLAP}s", data_dir=server.data_dir)
    rotated_at = time.time()
    new = next(k for k in rotated["keys"] if k["state"] == "current")  # type: ignore[union-attr]

    # The JWKS serves both generations, the old one marked with its retirement.
    context = ssl.create_default_context(cafile=str(server.ca_file))
    deadline = time.monotonic() + 10
    while busy._server.verifying_key.kid == old_kid and time.monotonic() < deadline:
        time.sleep(0.05)
    jwks = httpx.get(server.https_url + "/jwks.json", verify=context, timeout=10).json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids[:2] == [new["signing_kid"], new["encryption_kid"]] and old_kid in kids
    assert old_kid in jwks["hatchway_retires_at"]

    # The busy device switched, from a reply signed by the key it trusted.
    assert busy._server.verifying_key.kid == new["signing_kid"]
    saved = json.loads(busy.state_path.read_text())
    assert saved["server_keys"]["keys"][0]["kid"] == new["signing_kid"]
    # Sealed to the old key, delivered during the overlap: opened and stored.
    assert [post(server, token) for token in sleepy_held] == [200] * 3

    time.sleep(0.5)
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    assert MessageType.SERVER_KEYS in acks and acks[-1] is MessageType.ACK

    # After the overlap the old key opens nothing: the sleepy device must re-enrol.
    wait_until(rotated_at + SERVER_OVERLAP + 1.5)
    with pytest.raises(MessageRejected):
        sleepy.send({"too": "late"})
    busy.send({"still": "fine"})

    for token in [*sleepy_held, *busy_tokens.tokens]:
        assert post(server, token) == 400
    assert stored(server, "meter-busy") == len(acks) + 1
    assert stored(server, "meter-sleepy") == 3
    listed = cli("keys", "list", data_dir=server.data_dir)
    states = [k["state"] for k in listed["keys"]]  # type: ignore[union-attr]
    assert states == ["retired", "current"]
    busy.close()
    sleepy.close()


def test_the_transport_stays_plain_and_the_cli_rotates(
    rotating_server: ServerProcess, tmp_path: Path
) -> None:
    """The rotation travels on the plain listener, sealed: no TLS after enrolment."""
    device, recorder = enrolled(rotating_server, "meter-plain", tmp_path)
    device.rotate_keys()
    assert recorder.urls == {rotating_server.http_url + "/m"}
    assert isinstance(recorder.inner, HttpTransport)
    kid = device._signing.kid
    device.close()
    state = tmp_path / "meter-plain.json"
    out = cli("device", "rotate-keys", "--state", str(state), data_dir=rotating_server.data_dir)
    assert out["device_id"] == "meter-plain" and out["signing_kid"] != kid
    assert json.loads(state.read_text())["signing_key"]["kid"] == out["signing_kid"]
    nope = tmp_path / "nope.json"
    missing = subprocess.run(
        [*(sys.executable, "-m", "hatchway", "device", "rotate-keys"), "--state", str(nope)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "enrol first" in missing.stderr
