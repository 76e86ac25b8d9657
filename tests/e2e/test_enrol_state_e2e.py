"""Issue 7 part 2 item 3 against a real ``hatchway serve``: enrolment never loses keys.

Before the fix the state file was written only after the server had spent the secret
and bound the keys to the device, so a missing directory, another device's state file
(silently overwritten) or a lock held by another process lost the keys of an enrolled
device. Each case here asserts that nothing reached the server (the secret is still
unspent and works afterwards) and that no file holding keys was changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.config import settings_from_env
from hatchway.device import Device, EnrolmentError, StateFile
from hatchway.errors import ConfigurationError
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("enrol-state") / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def ctx(server: ServerProcess) -> Iterator[ServerContext]:
    """The operator's view of the same data dir (provisioning, reading the store)."""
    context = ServerContext.create(settings_from_env({"HATCHWAY_DATA_DIR": str(server.data_dir)}))
    try:
        yield context
    finally:
        context.close()


def enroll(server: ServerProcess, device_id: str, secret: str, state: Path) -> Device:
    return Device.enroll(
        server=server.https_url,
        device_id=device_id,
        secret=secret,
        state_path=state,
        ca_file=server.ca_file,
    )


def secret_unspent(ctx: ServerContext, device_id: str) -> bool:
    record = ctx.store.get_device(device_id)
    assert record is not None
    return record.secret_used_at is None and record.signing_jwk is None


def test_a_missing_directory_is_refused_before_anything_is_sent(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path
) -> None:
    secret = ctx.enrolment.provision("nodir-1")
    with pytest.raises(ConfigurationError, match="does not exist"):
        enroll(server, "nodir-1", secret, tmp_path / "missing" / "state.json")
    assert secret_unspent(ctx, "nodir-1")
    assert not (tmp_path / "missing").exists()
    # The secret still works: nothing was spent.
    with enroll(server, "nodir-1", secret, tmp_path / "state.json") as device:
        assert device.send({"n": 1}).body == {"status": "stored"}


def test_another_devices_state_file_is_never_overwritten(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path
) -> None:
    state = tmp_path / "owner.json"
    enroll(server, "owner-1", ctx.enrolment.provision("owner-1"), state).close()
    before = state.read_bytes()
    secret = ctx.enrolment.provision("intruder-1")
    with pytest.raises(ConfigurationError, match=r"device 'owner-1'.*refusing to overwrite"):
        enroll(server, "intruder-1", secret, state)
    assert state.read_bytes() == before  # the owner's keys are intact
    assert secret_unspent(ctx, "intruder-1")
    with Device.load(state) as owner:  # and still work
        assert owner.send({"n": 1}).body == {"status": "stored"}
    enroll(server, "intruder-1", secret, tmp_path / "intruder.json").close()


def test_the_cli_refuses_another_devices_state_file_with_one_json_error(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path
) -> None:
    state = tmp_path / "owner.json"
    enroll(server, "owner-2", ctx.enrolment.provision("owner-2"), state).close()
    before = state.read_bytes()
    secret = ctx.enrolment.provision("intruder-2")
    done = subprocess.run(
        [
            sys.executable, "-m", "hatchway", "device", "enroll", "--json",
            "--server", server.https_url, "--device-id", "intruder-2",
            "--state", str(state), "--ca", str(server.ca_file),
        ],
        input=secret + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "HATCHWAY_DATA_DIR": str(server.data_dir)},
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)
    assert "refusing to overwrite" in error["error"] and "owner-2" in error["error"]
    assert state.read_bytes() == before
    assert secret_unspent(ctx, "intruder-2")


HOLD_LOCK = """
import sys
from pathlib import Path
from hatchway.device.state import acquire_lock
handle = acquire_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_state_path_locked_by_another_process_is_refused(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path
) -> None:
    state = tmp_path / "busy.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        secret = ctx.enrolment.provision("busy-1")
        with pytest.raises(ConfigurationError, match="in use by another process"):
            enroll(server, "busy-1", secret, state)
        assert secret_unspent(ctx, "busy-1")
        assert not state.exists()
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()  # the holder exits, releasing its lock
        holder.wait(timeout=10)
        holder.stdout.close()
    enroll(server, "busy-1", secret, state).close()


def test_a_running_device_keeps_its_state_file(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path
) -> None:
    """The lock holder is a real device process; its file is neither read nor replaced."""
    state = tmp_path / "live.json"
    enroll(server, "live-1", ctx.enrolment.provision("live-1"), state).close()
    before = state.read_bytes()
    script = (
        "import sys; from pathlib import Path; from hatchway.device import Device\n"
        "d = Device.load(Path(sys.argv[1])); print('loaded', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "loaded"
        secret = ctx.enrolment.provision("live-2")
        with pytest.raises(ConfigurationError, match="in use by another process"):
            enroll(server, "live-2", secret, state)
        assert secret_unspent(ctx, "live-2")
        assert state.read_bytes() == before
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


def test_an_interrupted_enrolment_resumes_with_its_keys(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path
) -> None:
    state = tmp_path / "resume.json"
    secret = ctx.enrolment.provision("resume-1")
    with pytest.raises(EnrolmentError, match=r"invalid_grant.*pending enrolment"):
        enroll(server, "resume-1", "wrong-" + secret, state)
    pending = json.loads(state.read_text())
    assert pending["enrolment"] == "pending" and pending["device_id"] == "resume-1"
    assert "d" in pending["signing_key"] and "d" in pending["encryption_key"]
    assert state.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigurationError, match="did not complete"):
        StateFile.load(state)
    with enroll(server, "resume-1", secret, state) as device:
        assert device.state.signing_key == pending["signing_key"]
        assert device.state.encryption_key == pending["encryption_key"]
        assert device.send({"n": 1}).body == {"status": "stored"}
    record = ctx.store.get_device("resume-1")
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == pending["signing_key"]["kid"]


def test_keys_survive_a_crash_after_the_server_enrolled_them(
    server: ServerProcess, ctx: ServerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server bound the keys, then the final write failed: the keys are on disk."""
    state = tmp_path / "crash.json"
    secret = ctx.enrolment.provision("crash-1")

    def disk_full(self: StateFile) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(StateFile, "save", disk_full)
        with pytest.raises(OSError, match="No space"):
            enroll(server, "crash-1", secret, state)
    pending = json.loads(state.read_text())
    record = ctx.store.get_device("crash-1")
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == pending["signing_key"]["kid"]
    # The secret is spent; the operator re-provisions and the device resumes, same keys.
    again = ctx.enrolment.provision("crash-1", force=True)
    with enroll(server, "crash-1", again, state) as device:
        assert device.state.signing_key == pending["signing_key"]
        assert device.send({"n": 1}).body == {"status": "stored"}
