"""Key rotation records (revision 0007_key_rotation, docs/key-rotation.md).

Device keys: :meth:`KeyRotationRepository.rotate_device_keys` swaps a device's keys
and certificate and records the rotation under its message id, in one transaction
that checks the device still holds the key that asked. Server keys: the message-key
generations every replica reads; a rotation retires the live ones and adds the next
generation in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hatchway.store._base import RepositoryBase, check_id, dump_json, load_json
from hatchway.store.errors import InvalidTransition, KeyIdTaken, UnknownDevice
from hatchway.store.records import DeviceStatus, JsonObject
from hatchway.store.schema import (
    MAX_SERIAL_LENGTH,
    device_key_rotations,
    devices,
    revoked_certificates,
    server_keys,
)

#: RFC 5280 §5.3.1 reasonCode of a certificate a key rotation replaced.
SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class DeviceRotation:
    """One completed device-key rotation."""

    device_id: str
    mid: str
    old_signing_kid: str
    old_signing_jwk: JsonObject
    new_signing_kid: str
    new_encryption_kid: str
    certificate_pem: str
    rotated_at: float
    retires_at: float


@dataclass(frozen=True, slots=True)
class ServerKeyRow:
    """One server message-key generation, private halves still wrapped."""

    generation: int
    signing_kid: str
    encryption_kid: str
    wrapped: str
    created_at: float
    retires_at: float | None


def _rotation(row: Any) -> DeviceRotation:
    return DeviceRotation(
        device_id=row.device_id,
        mid=row.mid,
        old_signing_kid=row.old_signing_kid,
        old_signing_jwk=load_json(row.old_signing_jwk),
        new_signing_kid=row.new_signing_kid,
        new_encryption_kid=row.new_encryption_kid,
        certificate_pem=row.certificate_pem,
        rotated_at=row.rotated_at,
        retires_at=row.retires_at,
    )


def _get_rotation(conn: Connection, device_id: str, mid: str) -> DeviceRotation | None:
    row = conn.execute(
        select(device_key_rotations).where(
            device_key_rotations.c.device_id == device_id, device_key_rotations.c.mid == mid
        )
    ).one_or_none()
    return None if row is None else _rotation(row)


class KeyRotationRepository(RepositoryBase):
    """Device-key rotations and server message-key generations."""

    # -- device keys ------------------------------------------------------------------
    def get_device_rotation(self, device_id: str, mid: str) -> DeviceRotation | None:
        with self._read() as conn:
            return _get_rotation(conn, device_id, mid)

    def find_previous_signing_key(self, kid: str) -> DeviceRotation | None:
        """The rotation that retired signing key ``kid``, while it may still be used:
        the device is enrolled and its current key is the one that rotation installed.
        The caller compares ``retires_at`` with its clock."""
        rotations, dev = device_key_rotations, devices
        query = (
            select(rotations)
            .join(dev, dev.c.device_id == rotations.c.device_id)
            .where(
                rotations.c.old_signing_kid == kid,
                dev.c.signing_kid == rotations.c.new_signing_kid,
                dev.c.status == DeviceStatus.ENROLLED.value,
            )
            .order_by(rotations.c.rotated_at.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _rotation(row)

    def rotate_device_keys(
        self,
        device_id: str,
        *,
        mid: str,
        old_signing_kid: str,
        signing_jwk: JsonObject,
        encryption_jwk: JsonObject,
        certificate_pem: str,
        now: float,
        retires_at: float,
        superseded_serial: int | None = None,
    ) -> DeviceRotation:
        """Install the new keys and certificate if ``old_signing_kid`` is still current.

        Idempotent: a second call with the same ``mid`` returns the first rotation
        unchanged. Raises :class:`InvalidTransition` when the device no longer holds
        ``old_signing_kid`` (rotated meanwhile, reset, de-registered) and
        :class:`KeyIdTaken` when the new key id belongs to another device. The old
        certificate (``superseded_serial``) goes on the CRL as *superseded*.
        """
        check_id("mid", mid)
        new_kid = signing_jwk.get("kid")
        enc_kid = encryption_jwk.get("kid")
        if not isinstance(new_kid, str) or not isinstance(enc_kid, str):
            raise ValueError("rotated JWKs must carry their kid")
        try:
            with self._write() as conn:
                done = _get_rotation(conn, device_id, mid)
                if done is not None:
                    return done
                old = conn.execute(
                    select(devices.c.signing_jwk)
                    .where(
                        devices.c.device_id == device_id,
                        devices.c.status == DeviceStatus.ENROLLED.value,
                        devices.c.signing_kid == old_signing_kid,
                    )
                    .with_for_update()
                ).scalar_one_or_none()
                if old is None:
                    if (
                        conn.scalar(
                            select(devices.c.device_id).where(devices.c.device_id == device_id)
                        )
                        is None
                    ):
                        raise UnknownDevice(device_id)
                    raise InvalidTransition(
                        f"device {device_id}: key {old_signing_kid} not current"
                    )
                conn.execute(
                    update(devices)
                    .where(devices.c.device_id == device_id)
                    .values(
                        signing_jwk=dump_json(signing_jwk),
                        signing_kid=new_kid,
                        encryption_jwk=dump_json(encryption_jwk),
                        certificate_pem=certificate_pem,
                    )
                )
                values = {
                    "device_id": device_id,
                    "mid": mid,
                    "old_signing_kid": old_signing_kid,
                    "old_signing_jwk": old,
                    "new_signing_kid": new_kid,
                    "new_encryption_kid": enc_kid,
                    "certificate_pem": certificate_pem,
                    "rotated_at": now,
                    "retires_at": retires_at,
                }
                conn.execute(insert(device_key_rotations).values(**values))
                if superseded_serial is not None:
                    _supersede(conn, device_id, superseded_serial, now)
                return DeviceRotation(**{**values, "old_signing_jwk": load_json(old)})
        except IntegrityError:
            # The unique signing_kid: another device already holds this key id.
            raise KeyIdTaken(new_kid) from None

    # -- server keys ------------------------------------------------------------------
    def list_server_keys(self) -> list[ServerKeyRow]:
        """Every generation, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(server_keys).order_by(server_keys.c.generation)).all()
        return [
            ServerKeyRow(
                r.generation, r.signing_kid, r.encryption_kid, r.wrapped, r.created_at, r.retires_at
            )
            for r in rows
        ]

    def add_server_keys(
        self,
        *,
        signing_kid: str,
        encryption_kid: str,
        wrap: Callable[[int], str],
        now: float,
        retire_at: float | None,
        only_if_empty: bool = False,
    ) -> int | None:
        """Add the next generation; live older ones retire at ``retire_at``.

        ``wrap(generation) -> str`` seals the private keys for their row (the
        generation is its additional data). With ``only_if_empty`` nothing happens
        when a generation exists (first start of one of several replicas): None.
        """
        try:
            with self._write() as conn:
                highest = conn.scalar(select(func.max(server_keys.c.generation)))
                if highest is not None and only_if_empty:
                    return None
                generation = int(highest or 0) + 1
                if retire_at is not None:
                    conn.execute(
                        update(server_keys)
                        .where(
                            server_keys.c.retires_at.is_(None)
                            | (server_keys.c.retires_at > retire_at)
                        )
                        .values(retires_at=retire_at)
                    )
                conn.execute(
                    insert(server_keys).values(
                        generation=generation,
                        signing_kid=signing_kid,
                        encryption_kid=encryption_kid,
                        wrapped=wrap(generation),
                        created_at=now,
                        retires_at=None,
                    )
                )
                return generation
        except IntegrityError:
            if only_if_empty:
                return None  # another replica added the first generation meanwhile
            raise


def _supersede(conn: Connection, device_id: str, serial: int, now: float) -> None:
    key = format(serial, "x")
    if len(key) > MAX_SERIAL_LENGTH:
        raise ValueError("certificate serial longer than 20 octets")
    known = conn.scalar(
        select(revoked_certificates.c.serial).where(revoked_certificates.c.serial == key)
    )
    if known is None:
        conn.execute(
            insert(revoked_certificates).values(
                serial=key, device_id=device_id, revoked_at=now, code=SUPERSEDED
            )
        )
