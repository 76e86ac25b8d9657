"""The device side of enrolment refuses a bad state path and keeps its keys (no server).

Issue 7 part 2 item 3. The server here is a closed loopback port: whatever enrol does
before its first request must already have happened when that request fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.device import EnrolmentError
from hatchway.device.enrol import enroll
from hatchway.errors import ConfigurationError
from hatchway.msgsec import SignAlg
from hatchway.server.process import free_port


@pytest.fixture
def nowhere() -> str:
    return f"https://127.0.0.1:{free_port()}"  # nothing listens: connection refused


def attempt(server: str, path: Path, device_id: str = "dev-1", **options: object) -> None:
    enroll(
        server=server,
        device_id=device_id,
        secret="s",
        state_path=path,
        ca_file=None,
        timeout=2,
        **options,  # type: ignore[arg-type]
    )


def test_keys_are_on_disk_before_the_first_request(nowhere: str, tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    with pytest.raises(EnrolmentError, match=r"cannot reach.*kept in .*pending enrolment"):
        attempt(nowhere, path)
    pending = json.loads(path.read_text())
    assert pending["format"] == "hatchway-device-state/1"
    assert pending["enrolment"] == "pending"
    assert (pending["device_id"], pending["server"]) == ("dev-1", nowhere)
    assert {"d", "kid"} <= set(pending["signing_key"]) and "d" in pending["encryption_key"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left
    # A second attempt resumes with the same keys, rather than making new ones.
    with pytest.raises(EnrolmentError):
        attempt(nowhere, path)
    again = json.loads(path.read_text())
    assert again["signing_key"] == pending["signing_key"]
    assert again["encryption_key"] == pending["encryption_key"]


def test_resuming_with_other_algorithms_is_refused(nowhere: str, tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    with pytest.raises(EnrolmentError):
        attempt(nowhere, path)
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="--sign-alg ES256 --enc-curve P-256"):
        attempt(nowhere, path, sign_alg=SignAlg.EDDSA, enc_curve="X25519")
    assert path.read_bytes() == before


def test_another_devices_pending_enrolment_is_not_overwritten(nowhere: str, tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    with pytest.raises(EnrolmentError):
        attempt(nowhere, path, device_id="first")
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="pending enrolment of device 'first'"):
        attempt(nowhere, path, device_id="second")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"not json", b'{"format": "something-else"}', b"[1, 2]", b"\xff\xfe"]
)
def test_a_file_that_is_no_state_file_is_not_overwritten(
    nowhere: str, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "precious.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match="not a device state file"):
        attempt(nowhere, path)
    assert path.read_bytes() == content


def test_an_empty_file_may_be_used(nowhere: str, tmp_path: Path) -> None:
    path = tmp_path / "made-by-mktemp"
    path.write_bytes(b"")
    with pytest.raises(EnrolmentError):
        attempt(nowhere, path)
    assert json.loads(path.read_text())["enrolment"] == "pending"


def test_a_directory_is_refused(nowhere: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a directory"):
        attempt(nowhere, tmp_path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_state_like = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from(["hatchway-device-state/1", "other/1"]) | _json,
        "enrolment": st.sampled_from(["pending", "complete"]) | _json,
        "device_id": st.sampled_from(["dev-1", "dev-2"]) | _json,
        "server": _json,
        "signing_key": _json,
        "encryption_key": _json,
    },
)


@given(content=st.binary(max_size=64) | _state_like.map(lambda d: json.dumps(d).encode()))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_whatever_the_file_holds_it_is_refused_cleanly_or_safely_resumed(
    nowhere: str, tmp_path: Path, content: bytes
) -> None:
    """Hostile or damaged state files: a clear refusal, the file untouched; or an empty
    file used; never a crash, never another device's or a non-state file overwritten."""
    path = tmp_path / "fuzzed.json"
    path.write_bytes(content)
    try:
        attempt(nowhere, path)
    except ConfigurationError:
        assert path.read_bytes() == content
    except EnrolmentError:  # got as far as the (unreachable) server
        assert not content.strip(), content
        assert json.loads(path.read_text())["enrolment"] == "pending"
    else:  # pragma: no cover - nothing listens
        raise AssertionError("enrolled against a closed port")
