"""Property tests for the one new parser of issue 9's revocation: the device state file,
which may now hold a revoked device's tombstone (docs/device-state.md).

Whatever bytes the file holds, loading it raises only ``ConfigurationError`` (not a
usable state) or ``DeviceRevoked`` (a tombstone), never anything else; and a tombstone
always loads back as the revocation it records, with no key in it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.device import DeviceRevoked, StateFile
from hatchway.device.revoked import bury
from hatchway.device.state import FORMAT
from hatchway.errors import ConfigurationError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
# Mostly state-file-shaped objects, so the parser gets past its first checks.
documents = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"format": st.just(FORMAT)},
        optional={
            "revoked": json_values,
            "device_id": json_values,
            "enrolment": st.sampled_from(["pending", "x"]),
            "seq": json_values,
            "signing_key": json_values,
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_loading_any_state_file_fails_only_in_the_two_documented_ways(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        path.write_bytes(raw)
        try:
            StateFile.load(path).close()
        except (ConfigurationError, DeviceRevoked):
            return
        raise AssertionError(f"loaded a usable state from {raw!r}")


@settings(max_examples=100, deadline=None)
@given(
    device_id=st.text(min_size=1, max_size=64),
    reason=st.text(min_size=1, max_size=200),
    revoked_at=st.integers(min_value=0, max_value=2**53 - 1),
    secret=st.text(min_size=1, max_size=40),
)
def test_a_tombstone_loads_back_as_its_revocation_and_holds_no_key(
    device_id: str, reason: str, revoked_at: int, secret: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        state: dict[str, Any] = {"format": FORMAT, "signing_key": {"d": secret}}
        path.write_text(json.dumps(state))
        bury(path, DeviceRevoked(device_id, reason, revoked_at), fmt=FORMAT, server_id="s", now=1.0)
        assert "signing_key" not in json.loads(path.read_text())
        try:
            StateFile.load(path)
        except DeviceRevoked as exc:
            assert (exc.device_id, exc.reason, exc.revoked_at) == (device_id, reason, revoked_at)
        else:
            raise AssertionError("a tombstone loaded as a device")
        assert [p.name for p in Path(tmp).iterdir()] == ["state.json"]
