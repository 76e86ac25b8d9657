"""The login session transition table (issue 3: "One transition table holds the session states")."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools

import pytest

from hatchway.errors import LocalProtocolError
from hatchway.login.states import (
    TRANSITIONS,
    LoginSession,
    SessionState,
    approve,
    deny,
    expire_if_due,
    new_session,
    transition,
)
from hatchway.runtime import FrozenClock

S = SessionState
ALL_MOVES = list(itertools.product(S, S))
ALLOWED = [(a, b) for a, b in ALL_MOVES if b in TRANSITIONS[a]]
FORBIDDEN = [(a, b) for a, b in ALL_MOVES if b not in TRANSITIONS[a]]


def make_session(now: float, **overrides: object) -> LoginSession:
    session = new_session(
        device_code_hash=hashlib.sha256(b"device code").digest(),
        user_code="BDFG-HJKL",
        username="alice",
        client_id="hatchway-cli",
        scope="openid",
        device_name="Living-room TV",
        initiator_ip="127.0.0.1",
        initiator_user_agent="hatchway-cli/0.1",
        now=now,
    )
    return dataclasses.replace(session, **overrides)  # type: ignore[arg-type]


def test_table_is_exactly_the_issue_3_life_cycle_plus_withdrawal() -> None:
    expected = {
        S.PENDING: {S.APPROVED, S.DENIED, S.EXPIRED},
        # Issue 8 §2: the user may withdraw an approval the device has not collected.
        S.APPROVED: {S.CONSUMED, S.DENIED, S.EXPIRED, S.WITHDRAWN},
        S.DENIED: set(),
        S.EXPIRED: set(),
        S.CONSUMED: set(),
        S.WITHDRAWN: set(),
    }
    assert dict(TRANSITIONS) == expected
    assert len(ALLOWED) == 7
    assert len(FORBIDDEN) == 36 - 7


@pytest.mark.parametrize(("start", "end"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_every_allowed_move_succeeds(start: SessionState, end: SessionState) -> None:
    session = make_session(0.0, state=start)
    moved = transition(session, end)
    assert moved.state is end
    assert session.state is start  # the input value is untouched
    assert dataclasses.replace(moved, state=start) == session


@pytest.mark.parametrize(("start", "end"), FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_every_forbidden_move_raises(start: SessionState, end: SessionState) -> None:
    with pytest.raises(LocalProtocolError, match=f"from {start} to {end}"):
        transition(make_session(0.0, state=start), end)


def test_session_is_a_frozen_slotted_value(clock: FrozenClock) -> None:
    session = make_session(clock())
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.state = S.APPROVED  # type: ignore[misc]
    assert not hasattr(session, "__dict__")


def test_new_session_defaults(clock: FrozenClock) -> None:
    session = make_session(clock())
    assert session.state is S.PENDING
    assert session.expires_at == clock() + 300
    assert session.interval == 5
    assert session.last_poll_at is None
    assert not session.number_matching
    assert session.reference.startswith("hwl1.")


@pytest.mark.parametrize(
    "bad",
    [{"expires_in": 0}, {"interval": 0}, {"match_number": "7"}, {"match_number": "ab"}],
)
def test_new_session_rejects_unusable_settings(bad: dict[str, object]) -> None:
    args: dict[str, object] = {
        "device_code_hash": bytes(32),
        "user_code": "BDFG-HJKL",
        "username": "alice",
        "client_id": "c",
        "scope": "",
        "device_name": "tv",
        "initiator_ip": "::1",
        "initiator_user_agent": "ua",
        "now": 0.0,
    }
    with pytest.raises(ValueError):
        new_session(**(args | bad))  # type: ignore[arg-type]


def test_approve_records_who_and_when(clock: FrozenClock) -> None:
    session = make_session(clock())
    clock.advance(30)
    approved = approve(session, now=clock(), approver_ip="10.0.0.2", approver_user_agent="Phone")
    assert approved.state is S.APPROVED
    assert (approved.decided_at, approved.approver_ip, approved.approver_user_agent) == (
        clock(),
        "10.0.0.2",
        "Phone",
    )


def test_approve_rechecks_expiry_at_exactly_expires_at(clock: FrozenClock) -> None:
    session = make_session(clock())
    just_in_time = approve(
        session, now=session.expires_at - 0.001, approver_ip="ip", approver_user_agent="ua"
    )
    assert just_in_time.state is S.APPROVED
    too_late = approve(session, now=session.expires_at, approver_ip="ip", approver_user_agent="ua")
    assert too_late.state is S.EXPIRED
    assert too_late.approver_ip is None


def test_approve_rechecks_account_state(clock: FrozenClock) -> None:
    session = make_session(clock())
    locked = approve(
        session, now=clock(), approver_ip="ip", approver_user_agent="ua", account_active=False
    )
    assert locked.state is S.DENIED


@pytest.mark.parametrize("state", [S.APPROVED, S.DENIED, S.EXPIRED, S.CONSUMED, S.WITHDRAWN])
def test_approve_of_a_non_pending_session_raises(clock: FrozenClock, state: SessionState) -> None:
    with pytest.raises(LocalProtocolError):
        approve(
            make_session(clock(), state=state),
            now=clock(),
            approver_ip="ip",
            approver_user_agent="ua",
        )


@pytest.mark.parametrize(("state", "after"), [(S.PENDING, S.DENIED), (S.APPROVED, S.WITHDRAWN)])
def test_deny_from_active_states(
    clock: FrozenClock, state: SessionState, after: SessionState
) -> None:
    denied = deny(
        make_session(clock(), state=state), now=clock(), approver_ip="ip", approver_user_agent="ua"
    )
    assert denied.state is after
    assert denied.decided_at == clock()


def test_withdrawn_session_polls_access_denied(clock: FrozenClock) -> None:
    from hatchway.login import AccessDenied, poll

    approved = approve(
        make_session(clock()), now=clock(), approver_ip="ip", approver_user_agent="ua"
    )
    withdrawn = deny(approved, now=clock() + 1, approver_ip="ip", approver_user_agent="ua")
    result = poll(withdrawn, now=clock() + 2)
    assert isinstance(result.decision, AccessDenied)
    assert result.session is withdrawn  # terminal: nothing more is written


def test_deny_after_the_deadline_expires_instead(clock: FrozenClock) -> None:
    session = make_session(clock())
    late = deny(session, now=session.expires_at + 1, approver_ip="ip", approver_user_agent="ua")
    assert late.state is S.EXPIRED


@pytest.mark.parametrize("state", [S.DENIED, S.EXPIRED, S.CONSUMED, S.WITHDRAWN])
def test_deny_of_a_finished_session_raises(clock: FrozenClock, state: SessionState) -> None:
    with pytest.raises(LocalProtocolError):
        deny(
            make_session(clock(), state=state),
            now=clock(),
            approver_ip="i",
            approver_user_agent="u",
        )


@pytest.mark.parametrize("state", list(S))
def test_expire_if_due(clock: FrozenClock, state: SessionState) -> None:
    session = make_session(clock(), state=state)
    assert expire_if_due(session, session.expires_at - 1) is session
    after = expire_if_due(session, session.expires_at)
    if state in (S.PENDING, S.APPROVED):
        assert after.state is S.EXPIRED
        assert after.decided_at == session.expires_at
    else:
        assert after is session
