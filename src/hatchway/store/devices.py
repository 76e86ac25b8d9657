"""Device records: provisioning, one-time enrolment secrets, enrolment, tokens.

Implements the storage half of US 11,546,310 B2 claim 1 steps 2–3: the device's
credential (a one-time secret, stored hashed) is consumed exactly once, the first
web-service token is single-use, and the exchanged keys and certificate are kept
with the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from hatchway.store._base import (
    RepositoryBase,
    check_id,
    dump_json,
    load_optional_json,
)
from hatchway.store.errors import (
    DeviceExists,
    InvalidTransition,
    KeyIdTaken,
    SecretAlreadyUsed,
    UnknownDevice,
)
from hatchway.store.records import (
    DEVICE_TRANSITIONS,
    DeviceRecord,
    DeviceStatus,
    JsonObject,
    sources_of,
)
from hatchway.store.schema import (
    MAX_KID_LENGTH,
    device_revocations,
    devices,
    replay_windows,
    seen_jti,
    used_tokens,
)

#: ``use_token_once`` purges expired token rows at most this often (seconds).
TOKEN_PURGE_INTERVAL = 60.0


def _device_from_row(row: Row[Any]) -> DeviceRecord:
    return DeviceRecord(
        device_id=row.device_id,
        secret_hash=row.secret_hash,
        secret_used_at=row.secret_used_at,
        status=DeviceStatus(row.status),
        signing_jwk=load_optional_json(row.signing_jwk),
        encryption_jwk=load_optional_json(row.encryption_jwk),
        suite=load_optional_json(row.suite),
        certificate_pem=row.certificate_pem,
        created_at=row.created_at,
        enrolled_at=row.enrolled_at,
        deregistered_at=row.deregistered_at,
    )


def _fetch_device(conn: Connection, device_id: str) -> DeviceRecord | None:
    row = conn.execute(select(devices).where(devices.c.device_id == device_id)).one_or_none()
    return None if row is None else _device_from_row(row)


class DeviceRepository(RepositoryBase):
    """Devices and the single-use artefacts of their enrolment."""

    # Per process and unlocked on purpose: two threads racing here at worst purge
    # twice, and expired rows are harmless until purged (see use_token_once).
    _next_token_purge: float = float("-inf")

    def provision_device(self, device_id: str, secret_hash: str, *, now: float) -> None:
        """Register ``device_id`` with the hash of its one-time enrolment secret."""
        check_id("device_id", device_id)
        try:
            with self._write() as conn:
                conn.execute(
                    insert(devices).values(
                        device_id=device_id,
                        secret_hash=secret_hash,
                        status=DeviceStatus.PROVISIONED.value,
                        created_at=now,
                    )
                )
                # Created with the device so accept_message always has a row to
                # lock; highest 0 with an empty bitmap means "nothing seen yet".
                conn.execute(
                    insert(replay_windows).values(device_id=device_id, highest_seq=0, bitmap="0")
                )
        except IntegrityError:
            raise DeviceExists(device_id) from None

    def reprovision_device(self, device_id: str, secret_hash: str, *, now: float) -> None:
        """Reset an existing device to provisioned with a new one-time secret.

        The operator's "provision --force": keys, certificate and replay window are
        cleared (the device will enrol afresh and restart its sequence numbers;
        its old key no longer resolves, so old messages cannot be replayed).
        Messages, commands and the outbound sequence are kept. A revocation is
        cleared for the new enrolment; the revoked certificate stays on the CRL.
        """
        values: dict[str, object] = {
            "secret_hash": secret_hash,
            "secret_used_at": None,
            "signing_jwk": None,
            "signing_kid": None,
            "encryption_jwk": None,
            "suite": None,
            "certificate_pem": None,
            "enrolled_at": None,
            "deregistered_at": None,
            "created_at": now,
        }
        with self._write() as conn:
            self._move_device(conn, device_id, DeviceStatus.PROVISIONED, values)
            conn.execute(
                update(replay_windows)
                .where(replay_windows.c.device_id == device_id)
                .values(highest_seq=0, bitmap="0")
            )
            conn.execute(
                delete(device_revocations).where(device_revocations.c.device_id == device_id)
            )

    def get_device(self, device_id: str) -> DeviceRecord | None:
        with self._read() as conn:
            return _fetch_device(conn, device_id)

    def find_device_by_signing_kid(self, kid: str) -> DeviceRecord | None:
        """The device whose enrolled signing key has this ``kid`` (any status)."""
        query = select(devices).where(devices.c.signing_kid == kid)
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _device_from_row(row)

    def list_devices(self) -> list[DeviceRecord]:
        """Every device, oldest first."""
        query = select(devices).order_by(devices.c.created_at, devices.c.device_id)
        with self._read() as conn:
            return [_device_from_row(row) for row in conn.execute(query)]

    def consume_enrolment_secret(self, device_id: str, *, now: float) -> DeviceRecord:
        """Mark the one-time secret used; exactly one caller ever succeeds.

        The caller verifies the presented secret against ``secret_hash`` first,
        then calls this. The guarded UPDATE is the atomic test-and-set: of two
        concurrent enrolments with the right secret only one sees a row change.
        Only a still-provisioned device's secret can be consumed; for any other
        device the secret counts as used. Returns the updated record.
        """
        with self._write() as conn:
            result = conn.execute(
                update(devices)
                .where(
                    devices.c.device_id == device_id,
                    devices.c.secret_used_at.is_(None),
                    devices.c.status == DeviceStatus.PROVISIONED.value,
                )
                .values(secret_used_at=now)
            )
            record = _fetch_device(conn, device_id)
            if record is None:
                raise UnknownDevice(device_id)
            if result.rowcount != 1:
                raise SecretAlreadyUsed(device_id)
            return record

    def use_token_once(self, jti: str, *, exp: float, now: float) -> bool:
        """True the first time ``jti`` is presented before ``exp``, False ever after.

        A token already past ``exp`` is refused outright: its row may have been
        purged, so remembering it could not be relied on anyway.
        """
        check_id("jti", jti)
        if exp <= now:
            return False
        if now >= self._next_token_purge:
            self._next_token_purge = now + TOKEN_PURGE_INTERVAL
            self.purge_expired_jti(now=now)
        try:
            with self._write() as conn:
                conn.execute(insert(used_tokens).values(jti=jti, exp=exp))
        except IntegrityError:
            return False
        return True

    def purge_expired_jti(self, *, now: float) -> int:
        """Forget jtis whose ``exp`` has passed; returns how many rows went.

        Safe because an expired token or message is rejected on its ``exp`` claim
        (and messages also on the replay window) before the jti is consulted.
        """
        with self._write() as conn:
            messages_gone = conn.execute(delete(seen_jti).where(seen_jti.c.exp < now)).rowcount
            tokens_gone = conn.execute(delete(used_tokens).where(used_tokens.c.exp < now)).rowcount
        return int(messages_gone) + int(tokens_gone)

    def complete_enrolment(
        self,
        device_id: str,
        *,
        signing_jwk: JsonObject,
        encryption_jwk: JsonObject,
        suite: JsonObject,
        certificate_pem: str,
        now: float,
    ) -> None:
        """Store the exchanged keys and certificate; provisioned -> enrolled.

        Requires the enrolment secret to have been consumed: enrolment without a
        spent credential would skip claim 1's credential step. The signing JWK's
        ``kid`` (if any) becomes findable by :meth:`find_device_by_signing_kid`
        and must not belong to another device (:class:`KeyIdTaken`).
        """
        kid = signing_jwk.get("kid")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
            raise ValueError(f"signing_jwk kid must be a string of 1..{MAX_KID_LENGTH} chars")
        values = {
            "signing_jwk": dump_json(signing_jwk),
            "signing_kid": kid,
            "encryption_jwk": dump_json(encryption_jwk),
            "suite": dump_json(suite),
            "certificate_pem": certificate_pem,
            "enrolled_at": now,
        }
        try:
            with self._write() as conn:
                self._move_device(
                    conn,
                    device_id,
                    DeviceStatus.ENROLLED,
                    values,
                    extra_guard=devices.c.secret_used_at.is_not(None),
                )
        except IntegrityError:
            # The only constraint this UPDATE can break is the unique signing_kid.
            raise KeyIdTaken(str(kid)) from None

    def deregister_device(self, device_id: str, *, now: float) -> None:
        """provisioned|enrolled -> deregistered. The row stays, for the audit trail."""
        with self._write() as conn:
            self._move_device(conn, device_id, DeviceStatus.DEREGISTERED, {"deregistered_at": now})

    @staticmethod
    def _move_device(
        conn: Connection,
        device_id: str,
        target: DeviceStatus,
        values: Mapping[str, object],
        extra_guard: Any = None,
    ) -> None:
        allowed = [s.value for s in sources_of(DEVICE_TRANSITIONS, target)]
        guards = [devices.c.device_id == device_id, devices.c.status.in_(allowed)]
        if extra_guard is not None:
            guards.append(extra_guard)
        result = conn.execute(update(devices).where(*guards).values(status=target.value, **values))
        if result.rowcount == 1:
            return
        current = _fetch_device(conn, device_id)
        if current is None:
            raise UnknownDevice(device_id)
        if extra_guard is not None and current.status in allowed:
            raise InvalidTransition(f"device {device_id}: enrolment secret not consumed")
        raise InvalidTransition(f"device {device_id}: {current.status} -> {target}")
