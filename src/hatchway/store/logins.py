"""Device authorization sessions (RFC 8628 §3.1–3.5; US 9,635,022 B2 claims 1–3).

The login core decides every move (:mod:`hatchway.login.states`,
:mod:`hatchway.login.polling`); this module only persists its
:class:`~hatchway.login.states.LoginSession` values, and makes sure two replicas
cannot both act on the same session:

* :meth:`LoginRepository.update_login_session` is a compare-and-set. The UPDATE
  carries ``WHERE device_code_hash = ? AND state = ?`` (and, when the caller
  passes the value it read, the poll counters too), so of two replicas that read
  the same APPROVED session exactly one moves it to CONSUMED and issues tokens;
  the other gets :class:`StaleSession`. This is "tokens are issued exactly once".
* A user code is unique among *active* sessions only (a partial unique index),
  so the 20⁸ code space is reused once sessions end.
* :meth:`LoginRepository.expire_login_sessions` moves overdue sessions in one
  guarded UPDATE ... RETURNING: when several replicas sweep at once, each
  expired session is returned (and audited) by exactly one of them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from hatchway.login.states import TRANSITIONS, LoginSession, SessionState
from hatchway.store._base import RepositoryBase, check_id
from hatchway.store.login_errors import LoginSessionExists, StaleSession, UserCodeTaken
from hatchway.store.schema import ACTIVE_LOGIN_STATES, MAX_USERNAME_LENGTH, login_sessions

_HASH_BYTES = 32
# Columns that never change after creation; update_login_session refuses to
# rewrite them, so a caller's bug cannot re-point a session at another account.
_IMMUTABLE = (
    "user_code",
    "username",
    "client_id",
    "scope",
    "device_name",
    "initiator_ip",
    "initiator_user_agent",
    "created_at",
    "expires_at",
    "match_number",
    "code_choices",
)
_MUTABLE = (
    "state",
    "interval",
    "last_poll_at",
    "match_failures",
    "confirm_failures",
    "decided_at",
    "approver_ip",
    "approver_user_agent",
)
# The counters that change without a state change (a poll): comparing them too
# stops two concurrent polls from losing a slow_down step or a wrong match guess.
# A wrong confirm-code pick is such a change too.
_POLL_COUNTERS = ("interval", "last_poll_at", "match_failures", "confirm_failures")


def _check_hash(device_code_hash: bytes) -> bytes:
    if not isinstance(device_code_hash, bytes) or len(device_code_hash) != _HASH_BYTES:
        raise ValueError("device_code_hash must be a 32-byte SHA-256 digest")
    return device_code_hash


def _session_values(session: LoginSession) -> dict[str, Any]:
    values = {name: getattr(session, name) for name in (*_IMMUTABLE, *_MUTABLE)}
    values["state"] = session.state.value
    # Codes hold no spaces (XXXX-XXXX), so one space joins them unambiguously.
    values["code_choices"] = (
        None if session.code_choices is None else " ".join(session.code_choices)
    )
    values["device_code_hash"] = _check_hash(session.device_code_hash)
    return values


def _session_from_row(row: Row[Any]) -> LoginSession:
    return LoginSession(
        device_code_hash=bytes(row.device_code_hash),
        user_code=row.user_code,
        username=row.username,
        client_id=row.client_id,
        scope=row.scope,
        device_name=row.device_name,
        initiator_ip=row.initiator_ip,
        initiator_user_agent=row.initiator_user_agent,
        created_at=row.created_at,
        expires_at=row.expires_at,
        interval=row.interval,
        state=SessionState(row.state),
        last_poll_at=row.last_poll_at,
        match_number=row.match_number,
        match_failures=row.match_failures,
        code_choices=None if row.code_choices is None else tuple(row.code_choices.split(" ")),
        confirm_failures=row.confirm_failures,
        decided_at=row.decided_at,
        approver_ip=row.approver_ip,
        approver_user_agent=row.approver_user_agent,
    )


def _equals(name: str, value: object) -> ColumnElement[bool]:
    column = login_sessions.c[name]
    # "= NULL" is never true in SQL; a None read must be compared with IS NULL.
    return column.is_(None) if value is None else column == value


class LoginRepository(RepositoryBase):
    """Persistence for :class:`~hatchway.login.states.LoginSession`."""

    def create_login_session(self, session: LoginSession) -> None:
        """Store a new session (normally PENDING, from ``new_session``).

        Raises :class:`UserCodeTaken` when an active session already shows this
        user code (the caller draws another), :class:`LoginSessionExists` when the
        device code hash is not new.
        """
        # The same limits on both engines (SQLite ignores VARCHAR lengths).
        check_id("client_id", session.client_id)
        if not 0 < len(session.username) <= MAX_USERNAME_LENGTH:
            raise ValueError(f"username must be 1..{MAX_USERNAME_LENGTH} characters")
        values = _session_values(session)
        try:
            with self._write() as conn:
                conn.execute(insert(login_sessions).values(**values))
        except IntegrityError:
            # Which constraint broke is dialect-specific text; asking is portable.
            if self.get_login_session_by_device_code_hash(session.device_code_hash) is not None:
                raise LoginSessionExists(session.reference) from None
            raise UserCodeTaken(session.user_code) from None

    def get_login_session_by_device_code_hash(self, device_code_hash: bytes) -> LoginSession | None:
        """The session for this device code hash, in any state."""
        query = select(login_sessions).where(
            login_sessions.c.device_code_hash == _check_hash(device_code_hash)
        )
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _session_from_row(row)

    def get_login_session_by_user_code(self, user_code: str) -> LoginSession | None:
        """The *active* (pending or approved) session showing ``user_code``.

        Pass the code through ``normalize_user_code`` first. Ended sessions are
        not returned: their codes may already belong to a newer session. Expiry
        by the clock is the caller's ``expire_if_due``, not this lookup's.
        """
        query = select(login_sessions).where(
            login_sessions.c.user_code == user_code,
            login_sessions.c.state.in_(ACTIVE_LOGIN_STATES),
        )
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _session_from_row(row)

    def get_latest_login_session_by_user_code(self, user_code: str) -> LoginSession | None:
        """The newest session that showed ``user_code``, in any state.

        For telling a late Deny "the device has already signed in" apart from
        an unknown code; callers confirm it is the session they mean (its
        reference), because ended codes are reused.
        """
        query = (
            select(login_sessions)
            .where(login_sessions.c.user_code == user_code)
            .order_by(login_sessions.c.created_at.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _session_from_row(row)

    def update_login_session(
        self,
        session: LoginSession,
        *,
        expected_state: SessionState,
        expected: LoginSession | None = None,
    ) -> None:
        """Write ``session`` if the stored one is still in ``expected_state``.

        ``expected`` is the value the caller read and decided on; when given, the
        poll counters (interval, last_poll_at, match_failures) must also still
        match, so that concurrent polls cannot undo each other's ``slow_down``
        or number-matching failure count. Raises :class:`StaleSession` when
        another writer got there first, and ``ValueError`` for a move that is
        not in the login core's transition table or that rewrites a field
        fixed at creation.
        """
        if session.state is not expected_state and session.state not in TRANSITIONS[expected_state]:
            raise ValueError(f"login session cannot move from {expected_state} to {session.state}")
        if expected is not None:
            if expected.state is not expected_state:
                raise ValueError("expected.state differs from expected_state")
            if expected.device_code_hash != session.device_code_hash:
                raise ValueError("expected is another session")
        values = _session_values(session)
        guards = [
            login_sessions.c.device_code_hash == values["device_code_hash"],
            login_sessions.c.state == expected_state.value,
            *(_equals(name, values[name]) for name in _IMMUTABLE),
        ]
        if expected is not None:
            guards.extend(_equals(name, getattr(expected, name)) for name in _POLL_COUNTERS)
        changes = {name: values[name] for name in _MUTABLE}
        with self._write() as conn:
            result = conn.execute(update(login_sessions).where(*guards).values(**changes))
        if result.rowcount != 1:
            # Stale, vanished, or an immutable field differs; in every case the
            # caller's picture of the session is not what is stored.
            raise StaleSession(session.reference)

    def expire_login_sessions(self, *, now: float) -> list[LoginSession]:
        """Move every active session whose deadline has come to EXPIRED.

        Returns the sessions this call expired (for the audit log), oldest
        deadline first. ``decided_at`` becomes ``now``, as ``expire_if_due`` does.
        """
        statement = (
            update(login_sessions)
            .where(
                login_sessions.c.state.in_(ACTIVE_LOGIN_STATES),
                login_sessions.c.expires_at <= now,
            )
            .values(state=SessionState.EXPIRED.value, decided_at=now)
            .returning(*login_sessions.c)
        )
        with self._write() as conn:
            rows = conn.execute(statement).all()
        expired = [_session_from_row(row) for row in rows]
        expired.sort(key=lambda s: (s.expires_at, s.created_at))
        return expired

    def count_pending_login_sessions(self) -> int:
        """How many sessions wait for the phone (for load reports and limits)."""
        query = (
            select(func.count())
            .select_from(login_sessions)
            .where(login_sessions.c.state == SessionState.PENDING.value)
        )
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())
