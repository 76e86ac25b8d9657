"""The device's new parsers: offer body, slot record, firmware identity, enrolment trust.

Each takes data a peer (the server) or the disk supplies; each must refuse anything
malformed with ``ValueError`` (never another exception), and round-trip what it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.device.firmware import BadOffer, FirmwareIdentity, FirmwareOffer, SlotDir
from hatchway.device.firmware.identity import trust_from_enrolment
from hatchway.device.firmware.slots import Pending, Phase, SlotRecord
from hatchway.device.state import DeviceState
from hatchway.errors import LocalProtocolError
from hatchway.firmware import TrustStore
from tests.firmware.conftest import fw_key

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)

GOOD_OFFER: dict[str, Any] = {
    "release": "rel-21",
    "manifest": "a.b.c",
    "key": "a.b.c.d.e",
    "chunks": "/fw/rel-21/",
    "confirm_within": 60,
}


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda key, value: {**GOOD_OFFER, key: value},
        st.sampled_from([*GOOD_OFFER, "extra"]),
        json_values,
    )


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(_mutations(), st.dictionaries(st.text(max_size=10), json_values)))
def test_offer_parser_refuses_with_bad_offer_only(body: dict[str, Any]) -> None:
    try:
        offer = FirmwareOffer.from_body(body)
    except BadOffer:
        return
    assert FirmwareOffer.from_body(offer.to_json()) == offer


@pytest.mark.parametrize(
    "chunks",
    ["http://evil/fw/", "//evil/fw/", "/fw/../m", "/fw/?x=1", "fw/rel/", "/fw/a b/", "/fw//x/"],
)
def test_offer_chunk_path_stays_a_path_on_the_plain_listener(chunks: str) -> None:
    with pytest.raises(BadOffer) as info:
        FirmwareOffer.from_body({**GOOD_OFFER, "chunks": chunks})
    assert info.value.release == "rel-21"  # still reportable


@pytest.mark.parametrize(
    ("member", "value"),
    [("release", "../x"), ("release", ""), ("confirm_within", 0), ("confirm_within", True)],
)
def test_offer_values_out_of_range(member: str, value: object) -> None:
    with pytest.raises(BadOffer):
        FirmwareOffer.from_body({**GOOD_OFFER, member: value})


def _record() -> SlotRecord:
    offer = FirmwareOffer.from_body(GOOD_OFFER)
    return SlotRecord(
        active="a",
        pending=Pending(offer, "b", Phase.BOOTED, booted_at=5, progress=40),
        outbox=({"release": "rel-21", "state": "installed"},),
        failed=((20, "ab" * 32, "health_check_failed"),),
    )


def test_slot_record_round_trips() -> None:
    record = _record()
    assert SlotRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["active", "pending", "outbox", "failed", "format", "more"]),
    value=json_values,
)
def test_slot_record_parser_refuses_with_value_error(key: str, value: object) -> None:
    data = {**_record().to_json(), key: value}
    try:
        SlotRecord.from_json(data)
    except ValueError:
        return


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["offer", "slot", "phase", "booted_at", "progress"]),
    value=json_values,
)
def test_pending_parser_refuses_with_value_error(key: str, value: object) -> None:
    pending = _record().pending
    assert pending is not None
    try:
        Pending.from_json({**pending.to_json(), key: value})
    except ValueError:
        return


def test_a_damaged_record_on_disk_is_an_error_a_damaged_download_state_is_dropped(
    tmp_path: Path,
) -> None:
    slots = SlotDir(tmp_path / "fw")
    (slots.path / "slots.json").write_text('{"format": "hatchway-fw-slots/1", "active": "c"}')
    with pytest.raises(LocalProtocolError, match="damaged"):
        slots.load()
    (slots.path / "download.json").write_text("{not json")
    assert slots.load_download() is None


def test_a_pending_update_may_not_target_the_active_slot() -> None:
    data = _record().to_json()
    data["pending"]["slot"] = "a"
    with pytest.raises(ValueError, match="active slot"):
        SlotRecord.from_json(data)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["class", "version", "sequence", "trust", "other"]),
    value=json_values,
)
def test_identity_parser_refuses_with_value_error(key: str, value: object) -> None:
    good = FirmwareIdentity("acme", "2.0", 3, TrustStore.of(fw_key().public())).to_json()
    try:
        parsed = FirmwareIdentity.from_json({**good, key: value})
    except ValueError:
        return
    assert FirmwareIdentity.from_json(parsed.to_json()).to_json() == parsed.to_json()


def test_a_state_file_from_before_issue_9_is_factory_firmware_with_no_trust() -> None:
    state = DeviceState(
        device_id="d",
        server_id="s",
        signing_key={},
        encryption_key={},
        suite={},
        server_keys={},
        endpoints={"messages": "http://x/m"},
    )
    data = state.to_json()
    assert "firmware" not in data
    identity = FirmwareIdentity.from_json(DeviceState.from_json(data).firmware)
    assert (identity.device_class, identity.version, identity.sequence) == (None, "0", 0)
    assert len(identity.trust) == 0
    # And a state with a firmware member keeps it.
    fw = FirmwareIdentity("acme", "1.0", 1).to_json()
    with_fw = DeviceState.from_json({**data, "firmware": fw})
    assert with_fw.firmware == fw and with_fw.to_json()["firmware"] == fw


def test_enrolment_trust_takes_only_ed25519_public_keys() -> None:
    from hatchway.msgsec.keys import generate_signing_key

    good = fw_key().public().to_jwk()
    es256 = generate_signing_key().public().to_jwk()
    private = fw_key(b"x").to_jwk(private=True)
    answer = {"firmware": {"keys": [good, es256, private, "junk", 7]}}
    store = trust_from_enrolment(answer, 100)
    assert [e.kid for e in store] == [fw_key().kid]
    assert len(trust_from_enrolment({}, 100)) == 0  # no member: no trust at all
    pinned = fw_key(b"pinned").public()
    assert [e.kid for e in trust_from_enrolment(answer, 100, pinned=[pinned])] == [pinned.kid]


def test_enrolment_trust_keeps_the_servers_status_of_each_key() -> None:
    active, revoked = fw_key(), fw_key(b"gone")
    server = TrustStore.of(active.public(), revoked.public()).revoke(revoked.kid, 50, "stolen")
    listed = [{k: v for k, v in e.to_json().items() if k != "reason"} for e in server]
    store = trust_from_enrolment({"firmware": {"keys": listed}}, 100)
    assert {e.kid: e.status.value for e in store} == {
        active.kid: "active",
        revoked.kid: "revoked",
    }


@settings(max_examples=200, deadline=None)
@given(answer=json_values)
def test_enrolment_trust_never_raises(answer: object) -> None:
    store = trust_from_enrolment({"firmware": answer}, 0)
    assert len(store) == 0
