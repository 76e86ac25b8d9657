"""The device access token decision (RFC 8628 §3.4–3.5) and number matching."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.login.polling import (
    MAX_MATCH_ATTEMPTS,
    SLOW_DOWN_STEP,
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    GrantType,
    InvalidGrant,
    IssueTokens,
    PendingReason,
    SlowDown,
    TokenError,
    poll,
)
from hatchway.login.states import LoginSession, SessionState, approve, new_session
from hatchway.runtime import FrozenClock

S = SessionState


def make_session(now: float, *, match_number: str | None = None) -> LoginSession:
    return new_session(
        device_code_hash=hashlib.sha256(b"dc").digest(),
        user_code="BDFG-HJKL",
        username="alice",
        client_id="hatchway-cli",
        scope="openid offline_access",
        device_name="Living-room TV",
        initiator_ip="127.0.0.1",
        initiator_user_agent="cli",
        now=now,
        match_number=match_number,
    )


def approved(session: LoginSession, now: float) -> LoginSession:
    return approve(session, now=now, approver_ip="10.0.0.2", approver_user_agent="phone")


def test_wire_constants() -> None:
    assert GrantType.DEVICE_CODE.value == "urn:ietf:params:oauth:grant-type:device_code"
    assert {e.value for e in TokenError} == {
        "authorization_pending",
        "slow_down",
        "expired_token",
        "access_denied",
        "invalid_grant",
    }
    assert AuthorizationPending.error is TokenError.AUTHORIZATION_PENDING
    assert SlowDown.error is TokenError.SLOW_DOWN
    assert ExpiredToken.error is TokenError.EXPIRED_TOKEN
    assert AccessDenied.error is TokenError.ACCESS_DENIED
    assert InvalidGrant.error is TokenError.INVALID_GRANT
    assert IssueTokens.error is None


def test_first_poll_is_accepted_and_pending(clock: FrozenClock) -> None:
    result = poll(make_session(clock()), now=clock())
    assert result.decision == AuthorizationPending(reason=PendingReason.AWAITING_USER)
    assert result.session.last_poll_at == clock()


def test_slow_down_grows_by_five_and_counts_from_last_accepted_poll(clock: FrozenClock) -> None:
    session = poll(make_session(clock()), now=clock()).session
    accepted_at = clock()

    clock.advance(4.9)  # < 5 s after the accepted poll
    result = poll(session, now=clock())
    assert result.decision == SlowDown(interval=10)
    assert result.session.interval == 5 + SLOW_DOWN_STEP
    assert result.session.last_poll_at == accepted_at  # the refused poll does not count

    clock.advance(0.2)  # 5.1 s after the accepted poll, but the interval is now 10
    result = poll(result.session, now=clock())
    assert result.decision == SlowDown(interval=15)
    assert result.session.last_poll_at == accepted_at

    result = poll(result.session, now=accepted_at + 15)  # exactly last accepted + interval
    assert isinstance(result.decision, AuthorizationPending)
    assert result.session.last_poll_at == accepted_at + 15
    assert result.session.interval == 15  # "for this and all subsequent requests"

    result = poll(result.session, now=accepted_at + 29)
    assert result.decision == SlowDown(interval=20)


@given(gaps=st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=40))
def test_slow_down_model(gaps: list[float]) -> None:
    """Against a model: every accepted poll is ≥ last accepted + interval-so-far."""
    session = make_session(0.0)
    session = dataclasses.replace(session, expires_at=1e9)
    now, last_accepted, interval, slow_downs = 0.0, None, 5, 0
    for gap in gaps:
        now += gap
        result = poll(session, now=now)
        if last_accepted is not None and now < last_accepted + interval:
            assert result.decision == SlowDown(interval=interval + SLOW_DOWN_STEP)
            interval += SLOW_DOWN_STEP
            slow_downs += 1
        else:
            assert isinstance(result.decision, AuthorizationPending)
            last_accepted = now
        session = result.session
        assert session.interval == 5 + SLOW_DOWN_STEP * slow_downs
        assert session.last_poll_at == last_accepted


def test_expiry_at_exactly_expires_at(clock: FrozenClock) -> None:
    session = make_session(clock())
    before = poll(session, now=session.expires_at - 0.001)
    assert isinstance(before.decision, AuthorizationPending)
    at = poll(session, now=session.expires_at)
    assert at.decision == ExpiredToken()
    assert at.session.state is S.EXPIRED
    again = poll(at.session, now=session.expires_at + 100)
    assert again.decision == ExpiredToken()


def test_expiry_beats_slow_down(clock: FrozenClock) -> None:
    session = poll(make_session(clock()), now=clock()).session
    session = dataclasses.replace(session, expires_at=clock() + 1)
    assert poll(session, now=clock() + 1).decision == ExpiredToken()


def test_approved_session_issues_tokens_exactly_once(clock: FrozenClock) -> None:
    session = poll(make_session(clock()), now=clock()).session
    clock.advance(1)
    session = approved(session, clock())
    # The device was woken by push 1 s after its last poll: it collects at once.
    result = poll(session, now=clock())
    assert result.decision == IssueTokens(
        username="alice",
        client_id="hatchway-cli",
        scope="openid offline_access",
        device_name="Living-room TV",
    )
    assert result.session.state is S.CONSUMED
    replay = poll(result.session, now=clock() + 10)
    assert replay.decision == InvalidGrant()
    assert replay.session.state is S.CONSUMED


def test_token_issue_rechecks_expiry(clock: FrozenClock) -> None:
    session = approved(make_session(clock()), clock() + 10)
    result = poll(session, now=session.expires_at)
    assert result.decision == ExpiredToken()
    assert result.session.state is S.EXPIRED


def test_token_issue_rechecks_the_account(clock: FrozenClock) -> None:
    session = approved(make_session(clock()), clock())
    result = poll(session, now=clock() + 5, account_active=False)
    assert result.decision == AccessDenied()
    assert result.session.state is S.DENIED
    assert poll(result.session, now=clock() + 20).decision == AccessDenied()


def test_denied_session_answers_access_denied(clock: FrozenClock) -> None:
    session = approve(
        make_session(clock()),
        now=clock(),
        approver_ip="ip",
        approver_user_agent="ua",
        account_active=False,
    )
    assert poll(session, now=clock()).decision == AccessDenied()


class TestNumberMatching:
    def test_approval_without_the_number_never_completes(self, clock: FrozenClock) -> None:
        session = approved(make_session(clock(), match_number="47"), clock())
        decisions = []
        while session.state is S.APPROVED:
            clock.advance(session.interval)
            result = poll(session, now=clock())
            decisions.append(result.decision)
            session = result.session
        assert not any(isinstance(d, IssueTokens) for d in decisions)
        assert decisions[0] == AuthorizationPending(reason=PendingReason.AWAITING_MATCH_NUMBER)
        assert decisions[-1] == ExpiredToken()

    def test_missing_number_is_still_subject_to_slow_down(self, clock: FrozenClock) -> None:
        session = approved(make_session(clock(), match_number="47"), clock())
        session = poll(session, now=clock()).session
        assert poll(session, now=clock() + 1).decision == SlowDown(interval=10)

    def test_right_number_issues(self, clock: FrozenClock) -> None:
        session = approved(make_session(clock(), match_number="47"), clock())
        result = poll(session, now=clock(), match_number="47")
        assert isinstance(result.decision, IssueTokens)
        assert result.session.state is S.CONSUMED

    def test_wrong_numbers_are_counted_then_deny(self, clock: FrozenClock) -> None:
        session = approved(make_session(clock(), match_number="47"), clock())
        for left in range(MAX_MATCH_ATTEMPTS - 1, 0, -1):
            result = poll(session, now=clock(), match_number="74")
            assert result.decision == AuthorizationPending(
                reason=PendingReason.MATCH_NUMBER_MISMATCH, attempts_left=left
            )
            session = result.session
        result = poll(session, now=clock(), match_number="74")
        assert result.decision == AccessDenied()
        assert result.session.state is S.DENIED
        assert result.session.match_failures == MAX_MATCH_ATTEMPTS
        # Even the right number is too late now.
        assert poll(result.session, now=clock(), match_number="47").decision == AccessDenied()

    def test_number_sent_while_pending_is_not_checked(self, clock: FrozenClock) -> None:
        session = make_session(clock(), match_number="47")
        result = poll(session, now=clock(), match_number="00")
        assert isinstance(result.decision, AuthorizationPending)
        assert result.session.match_failures == 0

    def test_non_ascii_number_is_just_wrong(self, clock: FrozenClock) -> None:
        session = approved(make_session(clock(), match_number="47"), clock())
        result = poll(session, now=clock(), match_number="\ud800")
        assert result.decision == AuthorizationPending(
            reason=PendingReason.MATCH_NUMBER_MISMATCH, attempts_left=2
        )

    def test_matching_off_ignores_a_number(self, clock: FrozenClock) -> None:
        session = approved(make_session(clock()), clock())
        assert isinstance(poll(session, now=clock(), match_number="12").decision, IssueTokens)


@pytest.mark.parametrize("state", [S.DENIED, S.EXPIRED, S.CONSUMED])
def test_finished_sessions_never_issue(clock: FrozenClock, state: SessionState) -> None:
    session = dataclasses.replace(make_session(clock()), state=state)
    assert not isinstance(poll(session, now=clock()).decision, IssueTokens)
