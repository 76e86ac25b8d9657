"""Refresh tokens: opaque, rotated on every use, revocable by family.

OAuth 2.1 (draft-ietf-oauth-v2-1 §4.3.1) and RFC 6819 §5.2.2.3: each refresh
grant spends the presented token and issues a new one in the same *family* (one
family per sign-in, i.e. per device). A token that comes back after it was
rotated has been copied; the server cannot tell the thief from the owner, so
the whole family is revoked and both must sign in again.

Only SHA-256 digests of tokens are stored (the token has ≥128 random bits, so a
plain hash is enough, as for device codes). Rotation is one transaction under
the old token's row lock (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite), so concurrent refreshes with the same token never yield two live tokens.

Two limits (revision 0004):

* **Absolute lifetime.** A family has an ``expires_at`` fixed at sign-in; no
  token of it is issued past that, and none rotates at or after it, however
  often the device refreshes.
* **Reuse interval.** A client that retries a refresh (its first response was
  lost, or two threads refreshed at once) presents a token that was rotated a
  moment ago. Within ``reuse_interval`` seconds of that rotation, and only while
  the successor is itself unused and live, the retry gets *the same successor*
  back (sealed by the caller under a key derived from the presented token), so
  the family still has exactly one live token and the retry revokes nothing.
  Later, or once the successor has been used, it is reuse and the family is
  revoked as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from hatchway.store._base import RepositoryBase, check_id
from hatchway.store.login_errors import (
    RefreshFamilyExists,
    RefreshTokenInvalid,
    RefreshTokenReused,
)
from hatchway.store.login_records import RefreshRecord, Rotation, SessionFamilyRecord
from hatchway.store.schema import refresh_families, refresh_tokens
from hatchway.store.users import check_username, username_key

_HASH_BYTES = 32
_JOINED = refresh_tokens.join(refresh_families)


def _check_hash(name: str, token_hash: bytes) -> bytes:
    if not isinstance(token_hash, bytes) or len(token_hash) != _HASH_BYTES:
        raise ValueError(f"{name} must be a 32-byte SHA-256 digest")
    return token_hash


def _capped(expires_at: float, session_expires_at: float | None) -> float:
    return expires_at if session_expires_at is None else min(expires_at, session_expires_at)


def _refresh_from_row(row: Row[Any]) -> RefreshRecord:
    return RefreshRecord(
        token_hash=bytes(row.token_hash),
        family_id=row.family_id,
        username=row.username,
        client_id=row.client_id,
        device_name=row.device_name,
        scope=row.scope,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        session_expires_at=row.session_expires_at,
    )


def _family_from_row(row: Row[Any]) -> SessionFamilyRecord:
    return SessionFamilyRecord(
        family_id=row.family_id,
        username=row.username,
        client_id=row.client_id,
        device_name=row.device_name,
        scope=row.scope,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
    )


def _fetch_token(conn: Connection, token_hash: bytes) -> RefreshRecord:
    row = conn.execute(
        select(
            refresh_tokens,
            refresh_families.c.username,
            refresh_families.c.client_id,
            refresh_families.c.device_name,
            refresh_families.c.scope,
            refresh_families.c.expires_at.label("session_expires_at"),
        )
        .select_from(_JOINED)
        .where(refresh_tokens.c.token_hash == token_hash)
    ).one()
    return _refresh_from_row(row)


class TokenRepository(RepositoryBase):
    """Refresh token families: create, rotate with reuse detection, list, revoke."""

    def create_refresh_token(
        self,
        token_hash: bytes,
        *,
        username: str,
        client_id: str,
        device_name: str,
        session_family: str,
        now: float,
        expires_at: float,
        scope: str = "",
        session_expires_at: float | None = None,
    ) -> RefreshRecord:
        """Start a new family (one sign-in) with its first token.

        ``session_family`` is a fresh random id chosen by the caller; reusing one,
        or a token hash, raises :class:`RefreshFamilyExists`. ``session_expires_at``
        is the family's absolute end (``None``: uncapped); the token's own
        ``expires_at`` is cut down to it.
        """
        _check_hash("token_hash", token_hash)
        check_id("session_family", session_family)
        check_id("client_id", client_id)
        check_username(username)
        try:
            with self._write() as conn:
                conn.execute(
                    insert(refresh_families).values(
                        family_id=session_family,
                        username=username,
                        username_key=username_key(username),
                        client_id=client_id,
                        device_name=device_name,
                        scope=scope,
                        created_at=now,
                        last_used_at=now,
                        expires_at=session_expires_at,
                    )
                )
                conn.execute(
                    insert(refresh_tokens).values(
                        token_hash=token_hash,
                        family_id=session_family,
                        created_at=now,
                        expires_at=_capped(expires_at, session_expires_at),
                    )
                )
                return _fetch_token(conn, token_hash)
        except IntegrityError:
            raise RefreshFamilyExists(session_family) from None

    def rotate_refresh_token(
        self,
        old_hash: bytes,
        new_hash: bytes,
        *,
        now: float,
        expires_at: float,
        reuse_interval: float = 0.0,
        sealed_successor: bytes | None = None,
    ) -> Rotation:
        """Spend ``old_hash`` for ``new_hash`` in the same family, in one transaction.

        ``expires_at`` is the new token's sliding expiry (cut down to the family's
        absolute end). ``sealed_successor`` is the new token sealed by the caller,
        kept on the old row so that a retry within ``reuse_interval`` seconds can
        be handed the same successor (see the module docstring); it is opaque here.

        Raises :class:`RefreshTokenReused` (after revoking the family) when the
        old token was already rotated and this is not such a retry, and
        :class:`RefreshTokenInvalid` when it is unknown, expired, past its
        family's absolute end, or its family is revoked.
        """
        _check_hash("old_hash", old_hash)
        _check_hash("new_hash", new_hash)
        try:
            with self._write() as conn:
                row = conn.execute(
                    select(
                        refresh_tokens,
                        refresh_families.c.revoked_at,
                        refresh_families.c.expires_at.label("session_expires_at"),
                    )
                    .select_from(_JOINED)
                    .where(refresh_tokens.c.token_hash == old_hash)
                    .with_for_update()
                ).one_or_none()
                if row is None or row.revoked_at is not None:
                    raise RefreshTokenInvalid()
                if row.session_expires_at is not None and now >= row.session_expires_at:
                    raise RefreshTokenInvalid()
                if row.used_at is None:
                    if now >= row.expires_at:
                        raise RefreshTokenInvalid()
                    new_expiry = _capped(expires_at, row.session_expires_at)
                    record = self._rotate(
                        conn, row.family_id, old_hash, new_hash, now, new_expiry, sealed_successor
                    )
                    return Rotation(record)
                retry = self._retry(conn, row, now, reuse_interval)
                if retry is not None:
                    return retry
                # Reuse. Revoke inside this transaction and raise only after it
                # commits: raising here would roll the revocation back.
                self._revoke_families(conn, [row.family_id], now)
        except IntegrityError:
            # Only the new token's primary key can collide; nothing was changed.
            raise ValueError("new_hash is already in use") from None
        raise RefreshTokenReused()

    @staticmethod
    def _retry(
        conn: Connection, row: Row[Any], now: float, reuse_interval: float
    ) -> Rotation | None:
        """The first rotation's successor, if this presentation is a retry of it.

        A retry must come within ``reuse_interval`` of the rotation (a replica
        whose clock runs behind sees a negative age, which is still "just now"),
        and the successor must be unused and live: once the client has moved on
        to it, an old token coming back is a copy, not a retry.
        """
        if reuse_interval <= 0 or row.successor_hash is None or row.successor_sealed is None:
            return None
        if now - row.used_at > reuse_interval:
            return None
        successor = conn.execute(
            select(refresh_tokens.c.used_at, refresh_tokens.c.expires_at)
            .where(refresh_tokens.c.token_hash == row.successor_hash)
            .with_for_update()
        ).one_or_none()
        if successor is None or successor.used_at is not None or now >= successor.expires_at:
            return None
        return Rotation(
            _fetch_token(conn, bytes(row.successor_hash)), bytes(row.successor_sealed)
        )

    @staticmethod
    def _rotate(
        conn: Connection,
        family_id: str,
        old_hash: bytes,
        new_hash: bytes,
        now: float,
        expires_at: float,
        sealed_successor: bytes | None,
    ) -> RefreshRecord:
        conn.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == old_hash)
            .values(used_at=now, successor_hash=new_hash, successor_sealed=sealed_successor)
        )
        # The predecessor's sealed copy of old_hash's token is no use any more (a
        # retry needs an unused successor): drop it rather than keep it around.
        conn.execute(
            update(refresh_tokens)
            .where(
                refresh_tokens.c.family_id == family_id,
                refresh_tokens.c.successor_hash == old_hash,
            )
            .values(successor_sealed=None)
        )
        conn.execute(
            insert(refresh_tokens).values(
                token_hash=new_hash, family_id=family_id, created_at=now, expires_at=expires_at
            )
        )
        conn.execute(
            update(refresh_families)
            .where(refresh_families.c.family_id == family_id)
            .values(last_used_at=now)
        )
        return _fetch_token(conn, new_hash)

    def get_refresh_token(self, token_hash: bytes) -> RefreshRecord | None:
        """The token's record in any state (for audit and tests); None if unknown."""
        _check_hash("token_hash", token_hash)
        with self._read() as conn:
            exists = conn.scalar(
                select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == token_hash)
            )
            return None if exists is None else _fetch_token(conn, token_hash)

    def get_session_family(self, family_id: str) -> SessionFamilyRecord | None:
        with self._read() as conn:
            row = conn.execute(
                select(refresh_families).where(refresh_families.c.family_id == family_id)
            ).one_or_none()
        return None if row is None else _family_from_row(row)

    def list_sessions(
        self, username: str | None = None, *, now: float | None = None
    ) -> list[SessionFamilyRecord]:
        """Signed-in devices (unrevoked families), oldest first.

        With ``now``, families whose newest token has expired are left out too,
        since nothing can refresh them any more.
        """
        query = select(refresh_families).where(refresh_families.c.revoked_at.is_(None))
        if username is not None:
            query = query.where(refresh_families.c.username_key == username_key(username))
        if now is not None:
            live = select(refresh_tokens.c.family_id).where(
                refresh_tokens.c.used_at.is_(None), refresh_tokens.c.expires_at > now
            )
            query = query.where(refresh_families.c.family_id.in_(live))
        query = query.order_by(refresh_families.c.created_at, refresh_families.c.family_id)
        with self._read() as conn:
            return [_family_from_row(row) for row in conn.execute(query)]

    def revoke_session_family(self, family_id: str, *, now: float) -> bool:
        """Revoke one signed-in device; False if unknown or already revoked."""
        with self._write() as conn:
            return self._revoke_families(conn, [family_id], now) == 1

    def revoke_user_sessions(self, username: str, *, now: float) -> int:
        """Revoke every signed-in device of ``username``; returns how many."""
        owned_by_user = refresh_families.c.username_key == username_key(username)
        with self._write() as conn:
            result = conn.execute(
                update(refresh_families)
                .where(owned_by_user, refresh_families.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return int(result.rowcount)

    @staticmethod
    def _revoke_families(conn: Connection, family_ids: list[str], now: float) -> int:
        if not family_ids:
            return 0
        result = conn.execute(
            update(refresh_families)
            .where(
                refresh_families.c.family_id.in_(family_ids),
                refresh_families.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        return int(result.rowcount)
