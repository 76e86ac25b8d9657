"""Issue 9 end to end: a real ``hatchway serve`` and two real device processes.

The operator uses the real CLI on the server's data dir (keygen, trust, sign, publish,
groups, rollout, status); each device is enrolled and updated by the real CLI in its
own process (``device enroll --class ...``, ``device update --install-cmd``). Every
wait is bounded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hatchway.cli.fw_store import open_firmware_store
from hatchway.device.firmware import SlotDir
from hatchway.firmware import ChunkCipher
from hatchway.firmware.crypt import new_content_key
from hatchway.firmware.manifest import MANIFEST_TYP, Manifest, digest_image, split_chunks
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import dumps
from hatchway.runtime import system_random
from hatchway.server.datadir import ensure_data_dir
from hatchway.store.firmware_records import ReleaseRecord
from tests.firmware_e2e.conftest import CLASS, Fleet, cli

pytestmark = pytest.mark.e2e

CHUNK = 65536


def test_full_update_with_kill_9_mid_download_and_a_corrupted_chunk(fleet: Fleet) -> None:
    one, two = fleet.add_devices("meter-1", "meter-2")
    release, image = fleet.publish("2.1.0", 21, 40 * CHUNK + 321)  # 41 chunks
    started = cli(
        "firmware", "rollout", "2.1.0", "--group", "pilot", "--max-failures", "0",
        "--confirm-within", "600", *fleet.data,
    )  # fmt: skip
    assert sorted(started["offered"]) == ["meter-1", "meter-2"]

    # meter-1: chunks come slowly; it is killed with SIGKILL mid-download.
    one.proxy.delay = 0.05
    proc = one.start_update()
    slots = SlotDir.for_state(one.state)
    deadline = time.monotonic() + 60
    while True:
        state = slots.load_download() if slots.path.exists() else None
        have = {i for i in range(41) if state is not None and state.has(i)}
        if len(have) >= 10:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "meter-1 never got going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    one.proxy.settle()  # a chunk in flight at the kill counts as served before the restart
    state = slots.load_download()
    assert state is not None
    in_place = {i for i in range(41) if state.has(i)}
    served_before = len(one.proxy.chunks)
    status = fleet.status("2.1.0")
    mine = {d["device_id"]: d for d in status["devices"]}["meter-1"]
    assert mine["state"] == "downloading" and 0 <= mine["progress"] < 100

    # Restarted, it resumes: nothing already in place is fetched again.
    one.proxy.delay = 0.0
    out = one.update()
    assert (out["state"], out["release"], out["version"]) == ("confirmed", release, "2.1.0")
    again = one.proxy.chunks[served_before:]
    assert not set(again) & in_place
    assert sorted(again) == sorted(set(range(41)) - in_place)
    assert (one.dir / "flashed.bin").read_bytes() == image
    assert one.phases() == ["install", "boot", "health", "confirm"]
    assert (one.firmware()["version"], one.firmware()["sequence"]) == ("2.1.0", 21)

    # meter-2: one chunk arrives corrupted once; it is fetched again, never installed.
    two.proxy.flip_once = {7}
    out = two.update()
    assert out["state"] == "confirmed"
    assert two.proxy.chunks.count(7) == 2
    assert sorted(set(two.proxy.chunks)) == list(range(41))
    assert (two.dir / "flashed.bin").read_bytes() == image

    status = fleet.status("2.1.0")
    assert [d["state"] for d in status["devices"]] == ["confirmed", "confirmed"]
    assert status["rollout"]["state"] == "completed"
    # Nothing left to do: a second run exits 0 saying so.
    assert one.update() == {"release": None, "state": None, "reason": None, "version": None}


def test_a_replayed_old_manifest_is_refused_as_rollback(fleet: Fleet) -> None:
    one, _ = fleet.add_devices(
        "meter-1", "meter-2", enroll=("--firmware-version", "2.1.0", "--firmware-sequence", "21")
    )
    # An older, genuinely signed manifest (sequence 19) offered again.
    fleet.publish("1.9.0", 19, 2 * CHUNK)
    cli("firmware", "rollout", "1.9.0", "--group", "pilot", "--max-failures", "5", *fleet.data)
    out = one.update(code=1)
    assert (out["state"], out["reason"]) == ("refused", "rollback")
    assert one.proxy.chunks == [] and one.phases() == []
    assert one.firmware()["sequence"] == 21
    row = {d["device_id"]: d for d in fleet.status("1.9.0")["devices"]}["meter-1"]
    assert (row["state"], row["reason"]) == ("refused", "rollback")


def test_a_manifest_signed_by_the_servers_message_key_is_refused(fleet: Fleet) -> None:
    """A compromised server slips in a manifest signed with its own message key.

    ``publish`` refuses it, so the "attacker" writes the release straight into the
    store, as someone holding the server's data dir could. The device checks the
    manifest against its own firmware trust and refuses it (``invalid``).
    """
    one, _ = fleet.add_devices("meter-1", "meter-2")
    image = bytes(range(256)) * 600
    size, sha, chunks = digest_image(split_chunks(image))
    now = int(time.time())
    manifest = Manifest(21, CLASS, "6.6.6", size, sha, chunks, now, now + 86400)
    server_key = ensure_data_dir(fleet.server.data_dir).signing_key  # ES256 message key
    header = {"alg": server_key.alg.value, "kid": server_key.kid, "typ": MANIFEST_TYP}
    token = _jose.jws_encode(header, dumps(manifest.to_claims()), server_key.key).decode()
    with open_firmware_store(fleet.server.data_dir, None) as store:
        content_key = new_content_key(system_random)
        cipher = ChunkCipher(content_key, sha)
        sealed = [cipher.seal(i, c, system_random) for i, c in enumerate(split_chunks(image))]
        store.add_release(
            ReleaseRecord(
                "evil-1",
                CLASS,
                "6.6.6",
                21,
                server_key.kid,
                token,
                sha,
                size,
                len(sealed),
                content_key,
                float(now),
            ),
            sealed,
        )
    cli("firmware", "rollout", "6.6.6", "--group", "pilot", "--max-failures", "5", *fleet.data)
    out = one.update(code=1)
    assert (out["state"], out["reason"]) == ("refused", "invalid")
    assert one.proxy.chunks == [] and one.phases() == []
    row = {d["device_id"]: d for d in fleet.status("6.6.6")["devices"]}["meter-1"]
    assert (row["state"], row["reason"]) == ("refused", "invalid")
    # And the genuine path still refuses to publish such a manifest at all.
    forged = fleet.root / "forged.manifest"
    forged.write_text(token)
    image_path = fleet.root / "evil.bin"
    image_path.write_bytes(image)
    refused = cli("firmware", "publish", str(forged), str(image_path), *fleet.data, code=2)
    assert "refused" in refused["error"]


def test_a_failing_health_check_rolls_back_and_the_rollout_pauses_itself(fleet: Fleet) -> None:
    one, two = fleet.add_devices("meter-1", "meter-2")
    fleet.publish("2.1.0", 21, 3 * CHUNK + 5)
    started = cli(
        "firmware", "rollout", "2.1.0", "--group", "pilot", "--waves", "1,2",
        "--max-failures", "0", "--confirm-within", "600", *fleet.data,
    )  # fmt: skip
    first = started["offered"]
    assert len(first) == 1
    wave1 = one if first == ["meter-1"] else two
    wave2 = two if wave1 is one else one

    out = wave1.update(code=1, UNHEALTHY="1")
    assert (out["state"], out["reason"]) == ("rolled_back", "health_check_failed")
    assert "health_check_failed" in out["error"]
    assert wave1.phases() == ["install", "boot", "health", "rollback"]
    assert wave1.firmware()["sequence"] == 20  # still on the old image and position
    assert json.loads(wave1.state.read_text())["firmware"]["version"] == "2.0.0"

    status = fleet.status("2.1.0")
    row = {d["device_id"]: d for d in status["devices"]}[wave1.name]
    assert (row["state"], row["reason"]) == ("rolled_back", "health_check_failed")
    assert status["rollout"]["state"] == "paused"  # 1 failure > --max-failures 0
    # The paused rollout offers nothing to the second wave.
    assert wave2.update() == {"release": None, "state": None, "reason": None, "version": None}
    assert wave2.proxy.chunks == []


def test_not_confirmed_within_confirm_within_rolls_back(fleet: Fleet) -> None:
    one, _ = fleet.add_devices("meter-1", "meter-2")
    fleet.publish("2.1.0", 21, 65536 + 9)
    cli(
        "firmware", "rollout", "2.1.0", "--group", "pilot", "--max-failures", "5",
        "--confirm-within", "2", *fleet.data,
    )  # fmt: skip
    out = one.update(code=1, SLOW_HEALTH="10")  # the check is stopped at the deadline
    assert (out["state"], out["reason"]) == ("rolled_back", "confirm_timeout")
    assert one.phases() == ["install", "boot", "health", "rollback"]
    assert one.firmware()["sequence"] == 20
    row = {d["device_id"]: d for d in fleet.status("2.1.0")["devices"]}["meter-1"]
    assert (row["state"], row["reason"]) == ("rolled_back", "confirm_timeout")


def test_enrolment_records_the_position_and_the_servers_firmware_keys(
    fleet: Fleet, tmp_path: Path
) -> None:
    one, _ = fleet.add_devices("meter-1", "meter-2")
    assert one.update() == {"release": None, "state": None, "reason": None, "version": None}
    fw = one.firmware()
    assert (fw["class"], fw["version"], fw["sequence"]) == (CLASS, "2.0.0", 20)
    # The enrolment answer's firmware keys became the device's trust.
    pub = json.loads((tmp_path / "fw.pub.jwk").read_text())
    assert [k["jwk"]["kid"] for k in fw["trust"]["keys"]] == [pub["kid"]]


def test_an_offer_met_by_device_poll_is_kept_for_device_update(fleet: Fleet) -> None:
    one, _ = fleet.add_devices("meter-1", "meter-2")
    release, image = fleet.publish("2.1.0", 21, 65536 + 3)
    cli("firmware", "rollout", "2.1.0", "--group", "pilot", "--max-failures", "5", *fleet.data)
    polled = subprocess.run(
        [sys.executable, "-m", "hatchway", "device", "poll", "--state", str(one.state), "--json"],
        env=one.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert polled.returncode == 0, polled.stderr
    assert json.loads(polled.stdout)["command"] is None  # an offer is no command
    kept = json.loads(one.state.read_text())["extra"]["firmware_offer"]
    assert kept["manifest"] == (fleet.root / "2.1.0.manifest").read_text().strip()
    # The server will not deliver it again; the state file kept it. Piped, without
    # --json: a plain line per 10% and a closing sentence.
    cmd = [c for c in one.update_cmd() if c != "--json"]
    done = subprocess.run(cmd, env=one.env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("downloading: ") and "chunks)" in lines[0]
    assert lines[-1] == f"firmware {release} (2.1.0) installed and confirmed"
    assert (one.dir / "flashed.bin").read_bytes() == image
    assert "firmware_offer" not in json.loads(one.state.read_text()).get("extra", {})
