"""The token endpoint's answer to a device polling for its login (RFC 8628 §3.4–3.5).

:func:`poll` takes a session, the time and what the device sent, and returns the
next session value plus one :class:`TokenDecision`. The adapter maps the decision
to the wire (``error`` is the RFC 8628 §3.5 code) and, for :class:`IssueTokens`,
mints the tokens; it does nothing else.

Rules, in the order applied:

1. Expiry first (§3.5 ``expired_token``): a poll at or after ``expires_at``
   expires the session, even if it was approved but never collected.
2. Terminal states answer ``access_denied`` (denied, or withdrawn by the user
   after approving) or ``invalid_grant``
   (consumed: RFC 6749 §5.2 for a grant already used, so tokens go out once).
3. ``slow_down`` is computed from the last *accepted* poll: a poll earlier than
   ``last_poll_at + interval`` is refused, the interval grows by 5 s "for this
   and all subsequent requests" (§3.5), and ``last_poll_at`` does not move, so a
   client that hammers cannot shift its own window forward. A request that would
   finish an approved session is exempt: a device woken by push collects at
   once, and such requests are bounded (one issue, or at most
   ``MAX_MATCH_ATTEMPTS`` number guesses).
4. Pending: ``authorization_pending``.
5. Approved: the account's state is checked again (disabled or locked after
   approval means ``access_denied``), then number matching, then the session
   moves APPROVED → CONSUMED and tokens are issued.

Number matching ("request initiation verification"): when a session carries a
``match_number``, the phone page shows it after a successful approval and the
*device* must send it with its token request. Approval alone never completes
the login: without the number the device keeps getting
``authorization_pending``; after ``MAX_MATCH_ATTEMPTS`` wrong numbers the session
is denied. An attacker who phished the approval from a victim's phone thus also
needs the victim to read a number off the phone and hand it over, and a
guessing device has at most a 3 % chance.
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from hatchway.login.states import LoginSession, SessionState, expire_if_due, transition

__all__ = [
    "MAX_MATCH_ATTEMPTS",
    "SLOW_DOWN_STEP",
    "AccessDenied",
    "AuthorizationPending",
    "ExpiredToken",
    "GrantType",
    "InvalidGrant",
    "IssueTokens",
    "PendingReason",
    "PollResult",
    "SlowDown",
    "TokenDecision",
    "TokenError",
    "poll",
]

SLOW_DOWN_STEP = 5
"""Seconds added to the interval on each ``slow_down`` (RFC 8628 §3.5)."""

MAX_MATCH_ATTEMPTS = 3
"""Wrong match numbers a device may send before the session is denied."""


class GrantType(StrEnum):
    """The ``grant_type`` the token endpoint accepts for this flow (RFC 8628 §3.4)."""

    DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


class TokenError(StrEnum):
    """Error codes of the device access token response (RFC 8628 §3.5, RFC 6749 §5.2)."""

    AUTHORIZATION_PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - an RFC 8628 error code, not a secret
    ACCESS_DENIED = "access_denied"
    INVALID_GRANT = "invalid_grant"


class PendingReason(StrEnum):
    """Why a request is still pending; adapters may send it as ``error_description``."""

    AWAITING_USER = "awaiting_user"
    AWAITING_MATCH_NUMBER = "awaiting_match_number"
    MATCH_NUMBER_MISMATCH = "match_number_mismatch"


@dataclass(frozen=True, slots=True)
class TokenDecision:
    """Base of every token endpoint answer; ``error`` is ``None`` only for success."""

    error: ClassVar[TokenError | None] = None


@dataclass(frozen=True, slots=True)
class AuthorizationPending(TokenDecision):
    error: ClassVar[TokenError | None] = TokenError.AUTHORIZATION_PENDING
    reason: PendingReason = PendingReason.AWAITING_USER
    attempts_left: int | None = None


@dataclass(frozen=True, slots=True)
class SlowDown(TokenDecision):
    error: ClassVar[TokenError | None] = TokenError.SLOW_DOWN
    interval: int
    """The session's interval after the increase."""


@dataclass(frozen=True, slots=True)
class ExpiredToken(TokenDecision):
    error: ClassVar[TokenError | None] = TokenError.EXPIRED_TOKEN


@dataclass(frozen=True, slots=True)
class AccessDenied(TokenDecision):
    error: ClassVar[TokenError | None] = TokenError.ACCESS_DENIED


@dataclass(frozen=True, slots=True)
class InvalidGrant(TokenDecision):
    error: ClassVar[TokenError | None] = TokenError.INVALID_GRANT


@dataclass(frozen=True, slots=True)
class IssueTokens(TokenDecision):
    """Success: the adapter mints an access and a refresh token for these values."""

    username: str
    client_id: str
    scope: str
    device_name: str


@dataclass(frozen=True, slots=True)
class PollResult:
    """The session to store (possibly unchanged) and the answer to send."""

    session: LoginSession
    decision: TokenDecision


def _completes(session: LoginSession, match_number: str | None) -> bool:
    """Would this request finish an approved session (and so skip ``slow_down``)?"""
    if session.state is not SessionState.APPROVED:
        return False
    return session.match_number is None or match_number is not None


def _deny(session: LoginSession, now: float) -> PollResult:
    denied = dataclasses.replace(transition(session, SessionState.DENIED), decided_at=now)
    return PollResult(denied, AccessDenied())


def poll(
    session: LoginSession,
    *,
    now: float,
    match_number: str | None = None,
    account_active: bool = True,
) -> PollResult:
    """Decide one device access token request for ``session`` at time ``now``.

    ``match_number`` is what the device sent for number matching (``None`` if
    nothing); ``account_active`` is the account's current state from the store.
    The adapter must already have matched the request's ``device_code`` hash and
    ``client_id`` to this session.
    """
    current = expire_if_due(session, now)
    if current.state is SessionState.EXPIRED:
        return PollResult(current, ExpiredToken())
    if current.state in (SessionState.DENIED, SessionState.WITHDRAWN):
        return PollResult(current, AccessDenied())
    if current.state is SessionState.CONSUMED:
        return PollResult(current, InvalidGrant())

    too_soon = current.last_poll_at is not None and now < current.last_poll_at + current.interval
    if too_soon and not _completes(current, match_number):
        slowed = dataclasses.replace(current, interval=current.interval + SLOW_DOWN_STEP)
        return PollResult(slowed, SlowDown(interval=slowed.interval))

    accepted = dataclasses.replace(current, last_poll_at=now)
    if accepted.state is SessionState.PENDING:
        return PollResult(accepted, AuthorizationPending())

    # APPROVED: repeat the approval-time checks, because time has passed since.
    if not account_active:
        return _deny(accepted, now)
    if accepted.match_number is not None:
        if match_number is None:
            return PollResult(
                accepted, AuthorizationPending(reason=PendingReason.AWAITING_MATCH_NUMBER)
            )
        sent = match_number.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(sent, accepted.match_number.encode()):
            failures = accepted.match_failures + 1
            if failures >= MAX_MATCH_ATTEMPTS:
                return _deny(dataclasses.replace(accepted, match_failures=failures), now)
            return PollResult(
                dataclasses.replace(accepted, match_failures=failures),
                AuthorizationPending(
                    reason=PendingReason.MATCH_NUMBER_MISMATCH,
                    attempts_left=MAX_MATCH_ATTEMPTS - failures,
                ),
            )

    consumed = transition(accepted, SessionState.CONSUMED)
    return PollResult(
        consumed,
        IssueTokens(
            username=consumed.username,
            client_id=consumed.client_id,
            scope=consumed.scope,
            device_name=consumed.device_name,
        ),
    )
