"""Accounts for cross-device login: SCRAM verifiers and password-attempt state.

The issue (US 9,635,022 B2, "Password proof without the password") has the
server keep only SCRAM-SHA-256 verifiers (RFC 5802 §3 / RFC 7677: salt,
iterations, StoredKey, ServerKey). Every verifier passes through
:class:`~hatchway.login.scram.ScramVerifier` on the way in and is stored in its
canonical form, so a stray ``"password"`` key cannot reach the database.

Per-account back-off and lockout (:class:`~hatchway.login.ratelimit.LockoutPolicy`)
are persisted here, not kept in memory, so that every replica enforces the same
limit: a failure is read, advanced by the policy and written back under the
row's lock in one transaction.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import replace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from hatchway.login.ratelimit import LockoutPolicy
from hatchway.login.scram import ScramVerifier
from hatchway.store._base import RepositoryBase, load_json
from hatchway.store.login_errors import UnknownUser, UserExists
from hatchway.store.login_records import UserRecord
from hatchway.store.records import JsonObject
from hatchway.store.schema import MAX_ID_LENGTH, MAX_USERNAME_LENGTH, users

DEFAULT_LOCKOUT = LockoutPolicy()


def check_username(username: str) -> None:
    """Refuse names the store will not keep: empty, too long, spaces or controls."""
    if not isinstance(username, str) or not 0 < len(username) <= MAX_USERNAME_LENGTH:
        raise ValueError(f"username must be 1..{MAX_USERNAME_LENGTH} characters")
    if username != username.strip() or any(
        unicodedata.category(ch).startswith(("C", "Z")) and ch != " " for ch in username
    ):
        # Invisible characters would let two names look alike on the approval page.
        raise ValueError("username has surrounding spaces or control/separator characters")


def username_key(username: str) -> str:
    """The case-insensitive identity of a username.

    NFKC before casefold, so compatibility look-alikes ("ﬁ" vs "fi", full-width
    letters) cannot register a second account that reads the same.
    """
    check_username(username)
    key = unicodedata.normalize("NFKC", username).casefold()
    if len(key) > MAX_ID_LENGTH:
        raise ValueError("username expands too far under normalisation")
    return key


def _verifier_text(verifier: ScramVerifier | JsonObject) -> str:
    """Canonical verifier JSON; anything that is not a SCRAM verifier is refused."""
    if isinstance(verifier, dict):
        verifier = ScramVerifier.from_json(json.dumps(verifier))
    if not isinstance(verifier, ScramVerifier):
        raise TypeError("a user's credential must be a SCRAM verifier")
    return verifier.to_json()


def _user_from_row(row: Row[Any]) -> UserRecord:
    return UserRecord(
        username=row.username,
        verifier=load_json(row.verifier),
        disabled=bool(row.disabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
        failed_attempts=row.failed_attempts,
        blocked_until=row.blocked_until,
        locked=bool(row.locked),
        last_failure_at=row.last_failure_at,
        unlocked_at=row.unlocked_at,
    )


def _fetch_user(conn: Connection, key: str, *, for_update: bool = False) -> UserRecord:
    query = select(users).where(users.c.username_key == key)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise UnknownUser(key)
    return _user_from_row(row)


class UserRepository(RepositoryBase):
    """Accounts that can approve a cross-device login."""

    def add_user(
        self, username: str, verifier_json: ScramVerifier | JsonObject, *, now: float
    ) -> UserRecord:
        """Create an account; raises :class:`UserExists` if the name is taken in any case."""
        key = username_key(username)
        values = {
            "username_key": key,
            "username": username,
            "verifier": _verifier_text(verifier_json),
            "disabled": False,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._write() as conn:
                conn.execute(insert(users).values(**values))
                return _fetch_user(conn, key)
        except IntegrityError:
            raise UserExists(username) from None

    def get_user(self, username: str) -> UserRecord | None:
        """The account named ``username`` in any case, or None (also for invalid names)."""
        try:
            key = username_key(username)
        except ValueError:
            # Remote input: a name that could never be stored simply is not there.
            return None
        with self._read() as conn:
            try:
                return _fetch_user(conn, key)
            except UnknownUser:
                return None

    def list_users(self) -> list[UserRecord]:
        """Every account, ordered by its case-insensitive name."""
        with self._read() as conn:
            rows = conn.execute(select(users).order_by(users.c.username_key)).all()
        return [_user_from_row(row) for row in rows]

    def set_user_password(
        self, username: str, verifier_json: ScramVerifier | JsonObject, *, now: float
    ) -> UserRecord:
        """Replace the verifier. Attempt history is cleared: a new password starts afresh."""
        return self._update_user(
            username,
            now,
            verifier=_verifier_text(verifier_json),
            failed_attempts=0,
            blocked_until=0.0,
            locked=False,
            unlocked_at=now,
        )

    def set_user_disabled(self, username: str, disabled: bool, *, now: float) -> UserRecord:
        """Disable or re-enable an account (checked at approval and at token issue)."""
        return self._update_user(username, now, disabled=bool(disabled))

    def record_password_failure(
        self, username: str, *, now: float, policy: LockoutPolicy = DEFAULT_LOCKOUT
    ) -> UserRecord:
        """Count one failed password proof and apply ``policy``'s back-off or lockout.

        Read, advance and write happen under the row lock, so concurrent failures
        on several replicas are all counted. Returns the updated account; its
        ``attempt_state`` feeds ``policy.check`` before the next attempt.
        """
        key = username_key(username)
        with self._write() as conn:
            current = _fetch_user(conn, key, for_update=True)
            state = replace(current.attempt_state, last_failure_at=current.last_failure_at or 0.0)
            advanced = policy.record_failure(state, now)
            conn.execute(
                update(users)
                .where(users.c.username_key == key)
                .values(
                    failed_attempts=advanced.failures,
                    blocked_until=advanced.blocked_until,
                    locked=advanced.locked,
                    last_failure_at=now,
                )
            )
            return _fetch_user(conn, key)

    def record_password_success(self, username: str, *, now: float) -> UserRecord:
        """A verified proof clears this account's stored history.

        It is *not* an unlock: ``unlocked_at`` stays, so the in-memory limits
        that other client IPs earned against this account keep counting
        (issue 8 defect 5.1: a victim's sign-in must not end an attacker's lock).
        """
        return self._update_user(username, now, failed_attempts=0, blocked_until=0.0, locked=False)

    def unlock_user(self, username: str, *, now: float) -> UserRecord:
        """The operator's unlock: clear the history and record ``unlocked_at``,
        which makes every replica forget the failures counted before ``now``."""
        return self._update_user(
            username, now, failed_attempts=0, blocked_until=0.0, locked=False, unlocked_at=now
        )

    def _update_user(self, username: str, now: float, **values: object) -> UserRecord:
        key = username_key(username)
        with self._write() as conn:
            result = conn.execute(
                update(users).where(users.c.username_key == key).values(updated_at=now, **values)
            )
            if result.rowcount != 1:
                raise UnknownUser(username)
            return _fetch_user(conn, key)
