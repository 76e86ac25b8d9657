"""Login session states and the one table of moves between them.

Implements the session life cycle of US 9,635,022 B2 claims 1–3 as an RFC 8628
device authorization (§3.1–3.5) session. Every state change in the login flow
goes through :func:`transition`, which consults :data:`TRANSITIONS` and raises
``LocalProtocolError`` for any move not listed (STYLE.md §2: a move not in the
table is an error, never a silent no-op)::

    PENDING  --> APPROVED | DENIED | EXPIRED
    APPROVED --> CONSUMED | DENIED | EXPIRED | WITHDRAWN

``APPROVED -> CONSUMED`` is how tokens are issued exactly once. ``APPROVED ->
DENIED`` covers the checks repeated at token issue: the account was disabled or
locked after approval, or the device failed number matching. ``APPROVED ->
EXPIRED`` is an approval nobody collected before ``expires_at``. ``APPROVED ->
WITHDRAWN`` is the user pressing Deny after Approve, before the device
collected its tokens (issue 8 §2: the moment a phished user realises what
happened); the device then gets ``access_denied``. Once CONSUMED there is
nothing left to withdraw here: that is session revocation's job.

Confirm-code anti-phishing (:mod:`hatchway.login.antiphishing`) adds no state:
a wrong pick ends a PENDING session through ``PENDING -> DENIED``.

A ``LoginSession`` is a frozen value; the functions here return new values and
never touch a store or a clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from hatchway.errors import LocalProtocolError
from hatchway.login.codes import session_reference

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "DEFAULT_INTERVAL",
    "TRANSITIONS",
    "LoginSession",
    "SessionState",
    "approve",
    "deny",
    "expire_if_due",
    "new_session",
    "transition",
]

DEFAULT_EXPIRES_IN = 300.0
"""Seconds a session lives (the issue's default ``expires_in``)."""

DEFAULT_INTERVAL = 5
"""Seconds between polls (RFC 8628 §3.2's default ``interval``)."""


class SessionState(StrEnum):
    """Login session states; the values are what a store persists."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CONSUMED = "consumed"
    WITHDRAWN = "withdrawn"


TRANSITIONS: MappingProxyType[SessionState, frozenset[SessionState]] = MappingProxyType(
    {
        SessionState.PENDING: frozenset(
            {SessionState.APPROVED, SessionState.DENIED, SessionState.EXPIRED}
        ),
        SessionState.APPROVED: frozenset(
            {
                SessionState.CONSUMED,
                SessionState.DENIED,
                SessionState.EXPIRED,
                SessionState.WITHDRAWN,
            }
        ),
        SessionState.DENIED: frozenset(),
        SessionState.EXPIRED: frozenset(),
        SessionState.CONSUMED: frozenset(),
        SessionState.WITHDRAWN: frozenset(),
    }
)

ACTIVE_STATES = frozenset({SessionState.PENDING, SessionState.APPROVED})


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginSession:
    """One device login, as the store keeps it. Times are POSIX seconds."""

    device_code_hash: bytes
    user_code: str
    username: str
    client_id: str
    scope: str
    device_name: str
    initiator_ip: str
    initiator_user_agent: str
    created_at: float
    expires_at: float
    interval: int
    state: SessionState = SessionState.PENDING
    last_poll_at: float | None = None
    """Time of the last *accepted* poll; a poll answered ``slow_down`` leaves it."""
    match_number: str | None = None
    """The number the phone shows after approval; ``None`` when matching is off."""
    match_failures: int = 0
    code_choices: tuple[str, ...] | None = None
    """Confirm-code anti-phishing: the user code among decoys, in display order;
    ``None`` when the client's mode is another one."""
    confirm_failures: int = 0
    """Wrong picks among ``code_choices`` so far."""
    decided_at: float | None = None
    approver_ip: str | None = None
    approver_user_agent: str | None = None

    @property
    def reference(self) -> str:
        """The public session reference the SCRAM exchange is bound to."""
        return session_reference(self.device_code_hash)

    @property
    def number_matching(self) -> bool:
        return self.match_number is not None

    @property
    def confirm_code(self) -> bool:
        """Must a user who arrived by the QR link pick the device's code first?"""
        return self.code_choices is not None

    def is_due(self, now: float) -> bool:
        """True once the deadline has come: ``expires_at`` itself is already too late."""
        return now >= self.expires_at


def new_session(
    *,
    device_code_hash: bytes,
    user_code: str,
    username: str,
    client_id: str,
    scope: str,
    device_name: str,
    initiator_ip: str,
    initiator_user_agent: str,
    now: float,
    expires_in: float = DEFAULT_EXPIRES_IN,
    interval: int = DEFAULT_INTERVAL,
    match_number: str | None = None,
    code_choices: tuple[str, ...] | None = None,
) -> LoginSession:
    """A new PENDING session, as opened by the device authorization endpoint.

    At most one anti-phishing step: ``match_number`` (phone-number mode) or
    ``code_choices`` (confirm-code mode, which must contain ``user_code``).
    """
    if expires_in <= 0:
        raise ValueError("expires_in must be positive")
    if interval < 1:
        raise ValueError("interval must be at least one second")
    if match_number is not None and not (len(match_number) == 2 and match_number.isdigit()):
        raise ValueError("match_number must be two digits")
    if code_choices is not None and (
        match_number is not None
        or user_code not in code_choices
        or len(set(code_choices)) != len(code_choices)
        or len(code_choices) < 2
    ):
        raise ValueError("code_choices must be distinct codes including user_code")
    return LoginSession(
        device_code_hash=device_code_hash,
        user_code=user_code,
        username=username,
        client_id=client_id,
        scope=scope,
        device_name=device_name,
        initiator_ip=initiator_ip,
        initiator_user_agent=initiator_user_agent,
        created_at=now,
        expires_at=now + expires_in,
        interval=interval,
        match_number=match_number,
        code_choices=code_choices,
    )


def transition(session: LoginSession, to: SessionState) -> LoginSession:
    """Move ``session`` to ``to`` if the table allows it, else raise.

    The only place a session's ``state`` changes.
    """
    if to not in TRANSITIONS[session.state]:
        raise LocalProtocolError(f"login session cannot move from {session.state} to {to}")
    return dataclasses.replace(session, state=to)


def expire_if_due(session: LoginSession, now: float) -> LoginSession:
    """Mark an active session EXPIRED once its deadline has come; else unchanged.

    Callers run this before acting on a session so that expiry is enforced by
    the clock they inject, not by a sweeper that may run late.
    """
    if session.state in ACTIVE_STATES and session.is_due(now):
        return dataclasses.replace(transition(session, SessionState.EXPIRED), decided_at=now)
    return session


def approve(
    session: LoginSession,
    *,
    now: float,
    approver_ip: str,
    approver_user_agent: str,
    account_active: bool = True,
) -> LoginSession:
    """Record the phone's approval after its password proof was verified.

    Re-checks expiry and the account's state, as the issue requires at approval:
    the result is APPROVED, or EXPIRED if the deadline passed, or DENIED if the
    account is disabled or locked. Approving a session that is not PENDING (used,
    denied, already approved) raises ``LocalProtocolError``; adapters show the
    "already used" page by checking ``state`` first.
    """
    if session.state is SessionState.PENDING and session.is_due(now):
        return expire_if_due(session, now)
    target = SessionState.APPROVED if account_active else SessionState.DENIED
    return dataclasses.replace(
        transition(session, target),
        decided_at=now,
        approver_ip=approver_ip,
        approver_user_agent=approver_user_agent,
    )


def deny(
    session: LoginSession, *, now: float, approver_ip: str, approver_user_agent: str
) -> LoginSession:
    """Record the phone's Deny.

    From PENDING the session becomes DENIED. From APPROVED, until the device
    has collected its tokens, it becomes WITHDRAWN (the user took the approval
    back). An active session past its deadline becomes EXPIRED instead; any
    other move (CONSUMED: too late) raises ``LocalProtocolError``.
    """
    current = expire_if_due(session, now)
    if current is not session:
        return current
    target = (
        SessionState.WITHDRAWN if session.state is SessionState.APPROVED else SessionState.DENIED
    )
    return dataclasses.replace(
        transition(session, target),
        decided_at=now,
        approver_ip=approver_ip,
        approver_user_agent=approver_user_agent,
    )
