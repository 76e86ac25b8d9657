"""Confirm-code and withdrawal in the store (issue 8 §2), on SQLite and PostgreSQL:
the choices round-trip, a wrong pick is a compare-and-set like a poll, withdrawn
sessions free their code, and an ended session is still found by its code."""

from __future__ import annotations

import dataclasses

import pytest

from hatchway.login import (
    LoginSession,
    SessionState,
    approve,
    deny,
    hash_device_code,
    new_device_code,
    new_session,
    new_user_code,
    transition,
)
from hatchway.login.antiphishing import check_code_pick, new_code_choices
from hatchway.runtime import SeededRandom
from hatchway.store import StaleSession, Store

pytest_plugins = ["store_fixtures"]

T0 = 1_700_000_000.0


def _session(seed: bytes, *, user_code: str | None = None, now: float = T0) -> LoginSession:
    rng = SeededRandom(seed)
    code = user_code or new_user_code(rng)
    return new_session(
        device_code_hash=hash_device_code(new_device_code(rng)),
        user_code=code,
        username="alice",
        client_id="tv",
        scope="profile",
        device_name="TV",
        initiator_ip="203.0.113.7",
        initiator_user_agent="tv/1",
        now=now,
        code_choices=new_code_choices(code, rng),
    )


def test_choices_round_trip(store: Store) -> None:
    session = _session(b"a")
    store.create_login_session(session)
    stored = store.get_login_session_by_user_code(session.user_code)
    assert stored == session
    assert stored is not None and stored.code_choices is not None
    assert len(stored.code_choices) == 3 and session.user_code in stored.code_choices


def test_wrong_pick_is_a_compare_and_set(store: Store) -> None:
    session = _session(b"b")
    store.create_login_session(session)
    decoy = next(c for c in session.code_choices or () if c != session.user_code)
    picked = check_code_pick(session, decoy, now=T0 + 1)
    assert not picked.correct and picked.session.state is SessionState.DENIED
    store.update_login_session(picked.session, expected_state=session.state, expected=session)
    # A second writer that read the session before the pick cannot undo it.
    with pytest.raises(StaleSession):
        store.update_login_session(
            dataclasses.replace(session, last_poll_at=T0 + 2),
            expected_state=session.state,
            expected=session,
        )
    stored = store.get_login_session_by_device_code_hash(session.device_code_hash)
    assert stored is not None and stored.confirm_failures == 1
    assert stored.state is SessionState.DENIED


def test_withdrawn_session_frees_its_code_and_is_found_as_ended(store: Store) -> None:
    session = _session(b"c")
    store.create_login_session(session)
    approved = approve(session, now=T0 + 1, approver_ip="p", approver_user_agent="p")
    store.update_login_session(approved, expected_state=SessionState.PENDING, expected=session)
    withdrawn = deny(approved, now=T0 + 2, approver_ip="p", approver_user_agent="p")
    assert withdrawn.state is SessionState.WITHDRAWN
    store.update_login_session(withdrawn, expected_state=SessionState.APPROVED, expected=approved)
    assert store.get_login_session_by_user_code(session.user_code) is None
    latest = store.get_latest_login_session_by_user_code(session.user_code)
    assert latest is not None and latest.state is SessionState.WITHDRAWN
    # The code may now name a newer session; "latest" is that one.
    newer = _session(b"d", user_code=session.user_code, now=T0 + 10)
    store.create_login_session(newer)
    latest = store.get_latest_login_session_by_user_code(session.user_code)
    assert latest is not None and latest.reference == newer.reference
    assert store.get_latest_login_session_by_user_code("BCDF-GHJK") is None


def test_consumed_cannot_be_withdrawn(store: Store) -> None:
    session = _session(b"e")
    store.create_login_session(session)
    approved = approve(session, now=T0 + 1, approver_ip="p", approver_user_agent="p")
    store.update_login_session(approved, expected_state=SessionState.PENDING, expected=session)
    consumed = transition(approved, SessionState.CONSUMED)
    store.update_login_session(consumed, expected_state=SessionState.APPROVED, expected=approved)
    # A withdrawal decided on the stale APPROVED read loses the race.
    withdrawn = deny(approved, now=T0 + 2, approver_ip="p", approver_user_agent="p")
    with pytest.raises(StaleSession):
        store.update_login_session(
            withdrawn, expected_state=SessionState.APPROVED, expected=approved
        )
    with pytest.raises(ValueError):  # and the table has no CONSUMED -> WITHDRAWN
        store.update_login_session(
            dataclasses.replace(consumed, state=SessionState.WITHDRAWN),
            expected_state=SessionState.CONSUMED,
        )
