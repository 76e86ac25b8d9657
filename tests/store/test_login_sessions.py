"""Login sessions (RFC 8628): round trip, active user codes, compare-and-set, expiry.

The sessions are made and moved by the real login core (``new_session``,
``approve``, ``deny``, ``poll``); the store only has to keep them faithfully and
refuse the writes that would let two replicas act on one session.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import text

from hatchway.login import (
    IssueTokens,
    LoginSession,
    SessionState,
    SlowDown,
    approve,
    deny,
    hash_device_code,
    new_device_code,
    new_session,
    new_user_code,
    poll,
)
from hatchway.runtime import SeededRandom
from hatchway.store import LoginSessionExists, StaleSession, Store, UserCodeTaken

pytest_plugins = ["store_fixtures"]

T0 = 1_700_000_000.0


def _session(
    seed: bytes = b"s", *, user_code: str | None = None, match: str | None = None, now: float = T0
) -> LoginSession:
    rng = SeededRandom(seed)
    return new_session(
        device_code_hash=hash_device_code(new_device_code(rng)),
        user_code=user_code or new_user_code(rng),
        username="Alice",
        client_id="hatchway-cli",
        scope="openid offline_access",
        device_name="Living-room TV",
        initiator_ip="203.0.113.7",
        initiator_user_agent="hatchway-cli/0.1",
        now=now,
        match_number=match,
    )


def _approve(session: LoginSession, now: float) -> LoginSession:
    return approve(session, now=now, approver_ip="198.51.100.2", approver_user_agent="Phone/1")


def test_round_trip_every_field(store: Store) -> None:
    session = _session(match="42")
    store.create_login_session(session)
    assert store.get_login_session_by_device_code_hash(session.device_code_hash) == session
    assert store.get_login_session_by_user_code(session.user_code) == session
    approved = _approve(session, T0 + 5)
    store.update_login_session(approved, expected_state=SessionState.PENDING)
    stored = store.get_login_session_by_device_code_hash(session.device_code_hash)
    assert stored == approved
    assert stored is not None and stored.reference == session.reference
    assert store.get_login_session_by_device_code_hash(b"\0" * 32) is None
    with pytest.raises(ValueError):
        store.get_login_session_by_device_code_hash(b"short")


def test_duplicate_device_code_hash(store: Store) -> None:
    session = _session()
    store.create_login_session(session)
    with pytest.raises(LoginSessionExists):
        store.create_login_session(dataclasses.replace(session, user_code="BBBB-BBBB"))


def test_user_code_unique_among_active_sessions_only(store: Store) -> None:
    first = _session(b"a", user_code="BCDF-GHJK")
    store.create_login_session(first)
    clash = _session(b"b", user_code="BCDF-GHJK")
    with pytest.raises(UserCodeTaken):
        store.create_login_session(clash)
    # Approved is still active: the code still names the first session.
    store.update_login_session(_approve(first, T0 + 1), expected_state=SessionState.PENDING)
    with pytest.raises(UserCodeTaken):
        store.create_login_session(clash)
    consumed = poll(_approve(first, T0 + 1), now=T0 + 2)
    assert isinstance(consumed.decision, IssueTokens)
    store.update_login_session(consumed.session, expected_state=SessionState.APPROVED)
    assert store.get_login_session_by_user_code("BCDF-GHJK") is None
    # Once the first session is over, its code may be drawn again.
    store.create_login_session(clash)
    assert store.get_login_session_by_user_code("BCDF-GHJK") == clash


def test_compare_and_set_refuses_a_stale_writer(store: Store) -> None:
    session = _session()
    store.create_login_session(session)
    # Two replicas read the same PENDING session; the phone approves on one and
    # denies on the other. Only the first write may land.
    store.update_login_session(_approve(session, T0 + 3), expected_state=SessionState.PENDING)
    denied = deny(session, now=T0 + 4, approver_ip="x", approver_user_agent="y")
    with pytest.raises(StaleSession):
        store.update_login_session(denied, expected_state=SessionState.PENDING)
    stored = store.get_login_session_by_device_code_hash(session.device_code_hash)
    assert stored is not None and stored.state is SessionState.APPROVED


def test_moves_outside_the_transition_table_are_refused(store: Store) -> None:
    session = _session()
    store.create_login_session(session)
    consumed = dataclasses.replace(session, state=SessionState.CONSUMED)
    with pytest.raises(ValueError):
        store.update_login_session(consumed, expected_state=SessionState.PENDING)
    revived = dataclasses.replace(session, state=SessionState.PENDING)
    with pytest.raises(ValueError):
        store.update_login_session(revived, expected_state=SessionState.EXPIRED)


def test_fields_fixed_at_creation_cannot_be_rewritten(store: Store) -> None:
    session = _session()
    store.create_login_session(session)
    hijack = dataclasses.replace(session, username="mallory")
    with pytest.raises(StaleSession):
        store.update_login_session(hijack, expected_state=SessionState.PENDING)
    unknown = dataclasses.replace(session, device_code_hash=b"\1" * 32)
    with pytest.raises(StaleSession):
        store.update_login_session(unknown, expected_state=SessionState.PENDING)
    stored = store.get_login_session_by_device_code_hash(session.device_code_hash)
    assert stored == session


def test_tokens_are_issued_exactly_once_across_replicas(store_url: str, store: Store) -> None:
    """Several replicas poll the same approved session at once; one issues tokens."""
    session = _session()
    store.create_login_session(session)
    store.update_login_session(_approve(session, T0 + 1), expected_state=SessionState.PENDING)
    replicas = [Store.open(store_url) for _ in range(4)]
    barrier = threading.Barrier(len(replicas))
    issued: list[int] = []
    stale: list[int] = []
    errors: list[BaseException] = []

    def replica(i: int) -> None:
        try:
            current = replicas[i].get_login_session_by_device_code_hash(session.device_code_hash)
            assert current is not None
            result = poll(current, now=T0 + 2)
            barrier.wait()
            replicas[i].update_login_session(
                result.session, expected_state=current.state, expected=current
            )
            if isinstance(result.decision, IssueTokens):
                issued.append(i)
        except StaleSession:
            stale.append(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in replicas:
        r.close()
    assert errors == []
    assert len(issued) == 1 and len(stale) == len(replicas) - 1
    stored = store.get_login_session_by_device_code_hash(session.device_code_hash)
    assert stored is not None and stored.state is SessionState.CONSUMED


def test_expected_value_guards_poll_counters(store: Store) -> None:
    """Two polls in the same state: the slower one must not undo the slow_down."""
    session = _session()
    store.create_login_session(session)
    first = poll(session, now=T0 + 5)
    store.update_login_session(first.session, expected_state=SessionState.PENDING, expected=session)
    fast = poll(first.session, now=T0 + 6)
    assert isinstance(fast.decision, SlowDown)
    store.update_login_session(
        fast.session, expected_state=SessionState.PENDING, expected=first.session
    )
    # A concurrent request that decided on the older value loses.
    with pytest.raises(StaleSession):
        store.update_login_session(
            first.session, expected_state=SessionState.PENDING, expected=first.session
        )
    stored = store.get_login_session_by_device_code_hash(session.device_code_hash)
    assert stored is not None and stored.interval == fast.session.interval
    with pytest.raises(ValueError):
        store.update_login_session(session, expected_state=SessionState.APPROVED, expected=session)
    with pytest.raises(ValueError):
        store.update_login_session(
            session, expected_state=SessionState.PENDING, expected=_session(b"other")
        )


def test_expire_moves_overdue_active_sessions_once(store_url: str, store: Store) -> None:
    due_pending = _session(b"1")
    due_approved = _session(b"2", now=T0 - 10)
    fresh = _session(b"3", now=T0 + 200)
    done = _session(b"4")
    for s in (due_pending, due_approved, fresh, done):
        store.create_login_session(s)
    store.update_login_session(_approve(due_approved, T0), expected_state=SessionState.PENDING)
    store.update_login_session(
        deny(done, now=T0, approver_ip="x", approver_user_agent="y"),
        expected_state=SessionState.PENDING,
    )
    assert store.count_pending_login_sessions() == 2
    deadline = due_pending.expires_at  # the deadline itself is already too late
    expired = store.expire_login_sessions(now=deadline)
    assert [s.device_code_hash for s in expired] == [
        due_approved.device_code_hash,
        due_pending.device_code_hash,
    ]
    assert all(s.state is SessionState.EXPIRED and s.decided_at == deadline for s in expired)
    assert expired[0].approver_ip == "198.51.100.2"  # the audit log wants who approved
    with Store.open(store_url) as replica:
        assert replica.expire_login_sessions(now=deadline + 1) == []
    assert store.count_pending_login_sessions() == 1
    assert store.get_login_session_by_user_code(due_pending.user_code) is None
    assert store.get_login_session_by_user_code(fresh.user_code) == fresh


def test_user_code_index_is_partial_on_both_engines(store: Store) -> None:
    """The migration created a real partial unique index, not a plain one."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
        else:
            sql = "SELECT sql FROM sqlite_master WHERE name = :n"
        ddl = conn.execute(text(sql), {"n": "uq_login_sessions_user_code_active"}).scalar_one()
    assert "UNIQUE" in ddl.upper() and "WHERE" in ddl.upper()
