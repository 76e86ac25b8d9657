"""Firmware store on both engines: trust, releases, groups, rollouts and reports (issue 9)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_enrol import enrol_device

from hatchway.firmware import TrustStore, generate_firmware_key
from hatchway.firmware.chunkfile import sealed_span
from hatchway.firmware.rollout import FAILED, FINAL, FwState, RolloutState
from hatchway.firmware.wire import DeviceFirmwareState
from hatchway.runtime import SeededRandom
from hatchway.store import CommandStatus, InvalidTransition, Store, UnknownDevice
from hatchway.store.firmware_records import (
    ReleaseExists,
    ReleaseRecord,
    ReportStatus,
    RolloutExists,
    UnknownRelease,
)
from hatchway.store.rollouts import OFFER_KEY

pytest_plugins = ["store_fixtures"]

S = FwState


def release(rid: str = "r1", version: str = "2.1.0", cls: str = "acme-meter-v2") -> ReleaseRecord:
    return ReleaseRecord(
        release_id=rid,
        device_class=cls,
        version=version,
        seq=21,
        kid="kid-1",
        manifest="a.b.c",
        sha256=bytes(range(32)),
        size=70000,
        chunk_count=2,
        content_key=bytes(32),
        created_at=10.0,
    )


def sealed(rec: ReleaseRecord) -> list[bytes]:
    """Stand-in sealed chunks of the right lengths (the store checks lengths, not tags)."""
    return [bytes([i]) * sealed_span(rec.size, i)[1] for i in range(rec.chunk_count)]


def add(store: Store, rec: ReleaseRecord | None = None) -> None:
    rec = rec or release()
    store.add_release(rec, sealed(rec))


def fleet(store: Store, count: int, group: str = "pilot") -> list[str]:
    ids = [f"d{i:02d}" for i in range(count)]
    for device_id in ids:
        store.provision_device(device_id, "h", now=1.0)
        enrol_device(store, device_id)
    store.add_to_group(group, ids, now=2.0)
    return ids


def states(store: Store, rid: str = "r1") -> dict[str, FwState]:
    return {d.device_id: d.state for d in store.rollout_status(rid)[1]}


def test_trust_moves_into_the_store(store: Store) -> None:
    key = generate_firmware_key(random=SeededRandom(b"k1")).public()
    other = generate_firmware_key(random=SeededRandom(b"k2")).public()
    assert len(store.firmware_trust()) == 0
    store.change_firmware_trust(lambda t: t.add(key, 5), now=5.0)
    store.change_firmware_trust(lambda t: t.revoke(key.kid, 6, "stolen"), now=6.0)
    trust = store.firmware_trust()
    assert trust.can_publish(key.kid) is False
    # A revoked key stays known, so it can never be trusted again.
    with pytest.raises(ValueError, match="revoked"):
        store.change_firmware_trust(lambda t: t.add(key, 7), now=7.0)
    with pytest.raises(ValueError, match="forgotten"):
        store.change_firmware_trust(lambda t: TrustStore(), now=7.0)
    # A legacy file merges in: unknown keys added, known ones keep the store's decision.
    assert store.import_firmware_trust(TrustStore.of(key, other), now=8.0) == 1
    merged = store.firmware_trust()
    assert merged.can_publish(other.kid) and not merged.can_publish(key.kid)
    assert store.import_firmware_trust(TrustStore.of(other), now=9.0) == 0


def test_release_unique_per_class_and_version(store: Store) -> None:
    add(store)
    with pytest.raises(ReleaseExists):
        add(store, release("r2"))
    add(store, release("r3", cls="other-class"))
    assert [r.release_id for r in store.find_releases("2.1.0")] == ["r1", "r3"]
    got = store.get_release("r1")
    assert got is not None and got.sha256 == bytes(range(32)) and got.content_key == bytes(32)
    assert "content_key" not in repr(got) and store.get_release("nope") is None


def test_sealed_chunks_are_stored_with_their_release(store: Store) -> None:
    rec = release()
    add(store, rec)
    assert list(store.sealed_chunks("r1")) == sealed(rec)
    assert list(store.sealed_chunks("r1", batch=1)) == sealed(rec)  # batches join up
    assert list(store.sealed_chunks("nope")) == []


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        (lambda r: sealed(r)[:1], "1 sealed chunks for 2"),  # one missing
        (lambda r: [*sealed(r), b"x"], "past the end"),  # one too many
        (lambda r: [sealed(r)[0], sealed(r)[1] + b"x"], "wrong length"),  # padded
        (lambda r: [sealed(r)[0][1:], sealed(r)[1]], "wrong length"),  # truncated
    ],
)
def test_a_release_whose_chunks_do_not_fit_is_not_stored(
    store: Store, chunks: Callable[[ReleaseRecord], list[bytes]], why: str
) -> None:
    rec = release()
    with pytest.raises(ValueError, match=why):
        store.add_release(rec, chunks(rec))
    assert store.get_release("r1") is None and list(store.sealed_chunks("r1")) == []


def test_a_failing_chunk_source_rolls_the_release_back(store: Store) -> None:
    rec = release()

    def changing() -> Iterator[bytes]:
        yield sealed(rec)[0]
        raise ValueError("image refused: it changed while it was being published")

    with pytest.raises(ValueError, match="changed"):
        store.add_release(rec, changing())
    assert store.get_release("r1") is None and list(store.sealed_chunks("r1")) == []
    add(store, rec)  # and the release can still be published
    assert len(list(store.sealed_chunks("r1"))) == 2


def test_groups(store: Store) -> None:
    fleet(store, 3)
    assert store.add_to_group("pilot", ["d00", "d01"], now=3.0) == 0
    with pytest.raises(UnknownDevice):
        store.add_to_group("pilot", ["ghost"], now=3.0)
    assert store.remove_from_group("pilot", ["d01"]) == 1
    assert store.groups() == {"pilot": ["d00", "d02"]}
    with pytest.raises(ValueError):
        store.add_to_group(" bad", ["d00"], now=3.0)


def test_rollout_waves_offers_and_completion(store: Store) -> None:
    ids = fleet(store, 4)
    add(store)
    rollout = store.start_rollout("r1", "pilot", waves="25%,100%", max_failures=1, now=20.0)
    assert rollout.waves == (1, 4) and rollout.state is RolloutState.ACTIVE
    assert states(store) == {"d00": S.OFFERED, "d01": S.PENDING, "d02": S.PENDING, "d03": S.PENDING}
    # The offer is a queued command carrying the marker, resolvable for sealing.
    (command,) = store.pending_commands("d00")
    assert command.body == {OFFER_KEY: "r1"}
    with pytest.raises(RolloutExists):
        store.start_rollout("r1", "pilot", now=21.0)

    out = store.record_firmware_report("d00", "r1", S.DOWNLOADING, progress=40, now=30.0)
    assert out.status is ReportStatus.RECORDED
    assert store.get_command(command.command_id).status is CommandStatus.DONE  # type: ignore[union-attr]
    assert store.rollout_status("r1")[1][0].progress == 40
    store.record_firmware_report("d00", "r1", S.CONFIRMED, now=31.0)
    # Wave 0 is final: wave 1 is offered.
    assert set(states(store).values()) == {S.CONFIRMED, S.OFFERED}
    for device_id in ids[1:]:
        store.record_firmware_report(device_id, "r1", S.CONFIRMED, now=40.0)
    rollout, _ = store.rollout_status("r1")
    assert rollout is not None and rollout.state is RolloutState.COMPLETED


def test_bad_transitions_and_unknown_reports_are_refused(store: Store) -> None:
    fleet(store, 1)
    add(store)
    store.start_rollout("r1", "pilot", now=20.0)
    assert store.record_firmware_report("d00", "nope", S.VERIFIED, now=21.0).status is (
        ReportStatus.REFUSED
    )
    store.record_firmware_report("d00", "r1", S.INSTALLED, now=22.0)
    refused = store.record_firmware_report("d00", "r1", S.DOWNLOADING, now=23.0)
    assert refused.status is ReportStatus.REFUSED and "installed -> downloading" in refused.detail
    store.record_firmware_report("d00", "r1", S.CONFIRMED, now=24.0)
    again = store.record_firmware_report("d00", "r1", S.CONFIRMED, now=25.0)
    assert again.status is ReportStatus.DUPLICATE
    assert states(store) == {"d00": S.CONFIRMED}


def test_auto_pause_resume_and_cancel(store: Store) -> None:
    fleet(store, 6)
    add(store)
    store.start_rollout("r1", "pilot", waves="3,6", max_failures=1, now=20.0)
    store.record_firmware_report("d00", "r1", S.REFUSED, reason="rollback", now=21.0)
    assert store.rollout_status("r1")[0].state is RolloutState.ACTIVE  # type: ignore[union-attr]
    out = store.record_firmware_report("d01", "r1", S.ROLLED_BACK, reason="confirm_timeout", now=22)
    assert out.rollout_state is RolloutState.PAUSED
    store.record_firmware_report("d02", "r1", S.CONFIRMED, now=23.0)
    # Paused: wave 0 is final, but wave 1 is not opened.
    assert states(store)["d03"] is S.PENDING
    with pytest.raises(InvalidTransition):
        store.set_rollout_state("r1", RolloutState.PAUSED, now=24.0)
    resumed = store.set_rollout_state("r1", RolloutState.ACTIVE, now=25.0)
    assert resumed.state is RolloutState.ACTIVE and resumed.wave == 1
    assert states(store)["d03"] is S.OFFERED
    store.record_firmware_report("d03", "r1", S.DOWNLOADING, progress=5, now=26.0)
    cancelled = store.set_rollout_state("r1", RolloutState.CANCELLED, now=27.0)
    assert cancelled.state is RolloutState.CANCELLED
    # Undelivered offers are withdrawn and their command rows gone; d03 keeps going.
    assert states(store)["d04"] is S.WITHDRAWN and store.pending_commands("d04") == []
    assert store.record_firmware_report("d03", "r1", S.CONFIRMED, now=28.0).status is (
        ReportStatus.RECORDED
    )
    with pytest.raises(InvalidTransition):
        store.set_rollout_state("r1", RolloutState.ACTIVE, now=29.0)
    with pytest.raises(UnknownRelease):
        store.set_rollout_state("nope", RolloutState.PAUSED, now=29.0)


def test_delivered_offer_is_not_withdrawn(store: Store) -> None:
    fleet(store, 1)
    add(store)
    store.start_rollout("r1", "pilot", confirm_within=60, now=20.0)
    (command,) = store.pending_commands("d00")
    assert command.body == {OFFER_KEY: "r1", "confirm_within": 60}
    from hatchway.store import SealedDelivery

    sealed = SealedDelivery(jti="j1", exp=100.0, reply=b"x")
    assert store.claim_command_delivery(command.command_id, "d00", sealed=sealed, now=21.0)
    store.set_rollout_state("r1", RolloutState.CANCELLED, now=22.0)
    assert states(store) == {"d00": S.OFFERED}


_RUNS = itertools.count()
REPORTS = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(list(DeviceFirmwareState)),
    ),
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(reports=REPORTS, max_failures=st.integers(0, 3))
def test_random_reports_never_reach_an_illegal_state(
    store: Store, reports: list[tuple[int, DeviceFirmwareState]], max_failures: int
) -> None:
    """Property: any report sequence keeps every device on the table, and the rollout
    is paused exactly when failures exceed max_failures (no operator action)."""
    rid = f"r{next(_RUNS)}"  # hypothesis may repeat an example on the same store
    if not store.groups():
        fleet(store, 6)
    add(store, release(rid, version=f"1.{rid[1:]}"))
    store.start_rollout(rid, "pilot", waves="2,4,6", max_failures=max_failures, now=20.0)
    history: dict[str, list[FwState]] = {}
    for n, (index, state) in enumerate(reports):
        device_id = f"d{index:02d}"
        reason = {"refused": "rollback", "rolled_back": "health_check_failed"}.get(state.value)
        before = states(store, rid).get(device_id)
        out = store.record_firmware_report(
            device_id, rid, FwState(state.value), reason=reason, now=30.0 + n
        )
        after = states(store, rid).get(device_id)
        if out.status is not ReportStatus.RECORDED:
            assert after == before
        history.setdefault(device_id, []).append(after)  # type: ignore[arg-type]
        rollout, rows = store.rollout_status(rid)
        assert rollout is not None
        failures = sum(1 for r in rows if r.state in FAILED)
        assert (rollout.state is RolloutState.PAUSED) == (failures > max_failures)
        # A wave is open only once every earlier wave is final (or the rollout is paused).
        for row in rows:
            if row.wave < rollout.wave:
                assert row.state in FINAL
            if row.wave > rollout.wave:
                assert row.state is S.PENDING
    for seen in history.values():
        finals = [i for i, s in enumerate(seen) if s in FINAL]
        if finals:  # once final, it never changes again
            assert all(s == seen[finals[0]] for s in seen[finals[0] :])


def test_concurrent_reports_open_the_next_wave_exactly_once(store: Store) -> None:
    """Reports recorded at once (threads; replicas on PostgreSQL): the rollout row lock
    makes exactly one transaction see the wave final and queue the next wave's offers."""
    from concurrent.futures import ThreadPoolExecutor

    ids = fleet(store, 8)
    add(store)
    store.start_rollout("r1", "pilot", waves="4,8", max_failures=8, now=20.0)
    barrier = threading.Barrier(4)

    def confirm(device_id: str) -> ReportStatus:
        barrier.wait(timeout=10)
        return store.record_firmware_report(device_id, "r1", S.CONFIRMED, now=30.0).status

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(confirm, ids[:4]))
    assert outcomes == [ReportStatus.RECORDED] * 4
    for device_id in ids[4:]:
        assert len(store.pending_commands(device_id)) == 1
    rollout, _ = store.rollout_status("r1")
    assert rollout is not None and rollout.wave == 1
