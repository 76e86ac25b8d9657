"""Revoked devices, their de-registration notice, revoked certificates and CRLs.

Issue 9, "Revocation (fig. 7 from the operator's side)", storage half. Revocation
moves the device to ``revoked`` and records why; the device's next message (one
that passes the replay check, signed with its enrolled key) is answered with a
sealed de-registration notice instead of being stored. The notice is sealed once,
inside the same transaction that consumes the message's ``seq``/``jti``, and kept:
a retransmission of that message (same ``mid``) gets the same bytes until the
notice expires. Any other message after that, or any message once ``notice_until``
has passed without the device being told, is refused (:class:`RevocationClosed`).

Revoked certificate serials outlive the device's revocation (``provision --force``
clears the revocation for a new enrolment, never the old certificate's entry), and
every CRL signed over them is kept by its RFC 5280 §5.2.3 CRL number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from hatchway.store._base import RepositoryBase, check_id
from hatchway.store.errors import InvalidTransition, ReplayedJti, StoreError, UnknownDevice
from hatchway.store.messages import AcceptRequest
from hatchway.store.records import DEVICE_TRANSITIONS, DeviceStatus, SealedDelivery, sources_of
from hatchway.store.schema import (
    MAX_SERIAL_LENGTH,
    crls,
    device_revocations,
    devices,
    replay_windows,
    revoked_certificates,
    seen_jti,
)

#: Longest revocation reason the store keeps (it travels in the sealed notice).
MAX_REASON_LENGTH = 200


class RevocationClosed(StoreError):
    """A revoked device's message that gets no notice: it was told, or it is too late."""

    status_hint = 400


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    device_id: str
    revoked_at: float
    reason: str
    code: str
    notice_until: float
    notice_sent_at: float | None
    notice_pushed_at: float | None


@dataclass(frozen=True, slots=True)
class RevokedCertificate:
    serial: int
    device_id: str
    revoked_at: float
    code: str


@dataclass(frozen=True, slots=True)
class CrlRecord:
    number: int
    this_update: float
    next_update: float
    der: bytes


#: ``build(number, entries) -> (this_update, next_update, der)``: signs one CRL.
CrlBuilder = Callable[[int, Sequence[RevokedCertificate]], tuple[float, float, bytes]]
#: ``seal(outbound_seq) -> SealedDelivery``: seals the notice with that sequence number.
NoticeSealer = Callable[[int], SealedDelivery]


def _revocation_from_row(row: Row[Any]) -> RevocationRecord:
    return RevocationRecord(
        device_id=row.device_id,
        revoked_at=row.revoked_at,
        reason=row.reason,
        code=row.code,
        notice_until=row.notice_until,
        notice_sent_at=row.notice_sent_at,
        notice_pushed_at=row.notice_pushed_at,
    )


def _fetch(conn: Connection, device_id: str) -> RevocationRecord | None:
    row = conn.execute(
        select(device_revocations).where(device_revocations.c.device_id == device_id)
    ).one_or_none()
    return None if row is None else _revocation_from_row(row)


class DeviceRevocationRepository(RepositoryBase):
    """Operator-side de-registration (revision 0008_revocation)."""

    def revoke_device(
        self,
        device_id: str,
        *,
        reason: str,
        code: str,
        serial: int | None,
        now: float,
        notice_until: float,
    ) -> tuple[RevocationRecord, bool]:
        """Revoke ``device_id`` and its certificate (``serial``) in one transaction.

        Returns the revocation and whether it is new: revoking a revoked device
        changes nothing and returns the first revocation.
        """
        check_id("device_id", device_id)
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_LENGTH:
            raise ValueError(f"the reason must be 1..{MAX_REASON_LENGTH} characters")
        allowed = [s.value for s in sources_of(DEVICE_TRANSITIONS, DeviceStatus.REVOKED)]
        with self._write() as conn:
            moved = conn.execute(
                update(devices)
                .where(devices.c.device_id == device_id, devices.c.status.in_(allowed))
                .values(status=DeviceStatus.REVOKED.value)
            ).rowcount
            if moved != 1:
                existing = _fetch(conn, device_id)
                if existing is not None:
                    return existing, False
                status = conn.scalar(
                    select(devices.c.status).where(devices.c.device_id == device_id)
                )
                if status is None:
                    raise UnknownDevice(device_id)
                raise InvalidTransition(f"device {device_id}: {status} -> revoked")
            conn.execute(
                insert(device_revocations).values(
                    device_id=device_id,
                    revoked_at=now,
                    reason=reason,
                    code=code,
                    notice_until=notice_until,
                )
            )
            if serial is not None:
                key = format(serial, "x")
                if len(key) > MAX_SERIAL_LENGTH:
                    raise ValueError("certificate serial longer than 20 octets")
                known = conn.scalar(
                    select(revoked_certificates.c.serial).where(
                        revoked_certificates.c.serial == key
                    )
                )
                if known is None:
                    conn.execute(
                        insert(revoked_certificates).values(
                            serial=key, device_id=device_id, revoked_at=now, code=code
                        )
                    )
            record = _fetch(conn, device_id)
        assert record is not None  # noqa: S101 - inserted above, same transaction
        return record, True

    def get_revocation(self, device_id: str) -> RevocationRecord | None:
        with self._read() as conn:
            return _fetch(conn, device_id)

    def answer_revoked(self, request: AcceptRequest, seal: NoticeSealer) -> bytes:
        """The notice for a message from a revoked device; nothing of it is stored.

        The replay check runs as for any message (``advance`` may raise, a seen
        ``jti`` raises :class:`ReplayedJti`), and the message's ``seq``/``jti`` are
        consumed, so a replayed token, from before or after the revocation, never
        gets a notice. The first message is answered with a fresh notice; a
        retransmission of it (same ``mid``, before the notice's ``exp``) with the same
        bytes; anything else raises :class:`RevocationClosed`, as does a first
        message after ``notice_until``.
        """
        device_id, now, mid = request.device_id, request.now, request.mid
        check_id("jti", request.jti)
        if mid is not None:
            check_id("mid", mid)
        with self._write() as conn:
            window = conn.execute(
                select(replay_windows.c.highest_seq, replay_windows.c.bitmap)
                .where(replay_windows.c.device_id == device_id)
                .with_for_update()
            ).one_or_none()
            found = conn.execute(
                select(device_revocations, devices.c.outbound_seq)
                .join(devices, devices.c.device_id == device_revocations.c.device_id)
                .where(
                    device_revocations.c.device_id == device_id,
                    devices.c.status == DeviceStatus.REVOKED.value,
                    devices.c.signing_kid == request.signing_kid,
                )
            ).one_or_none()
            if window is None or found is None:
                raise UnknownDevice(f"{device_id} is not revoked with that key")
            highest, bitmap = request.advance(window.highest_seq, int(window.bitmap, 16))
            seen = conn.execute(
                select(seen_jti.c.jti).where(
                    seen_jti.c.device_id == device_id, seen_jti.c.jti == request.jti
                )
            ).first()
            if seen is not None:
                raise ReplayedJti()
            if found.notice_sent_at is not None:
                if mid is None or mid != found.notice_mid or now >= found.notice_exp:
                    raise RevocationClosed(f"{device_id} was told it is revoked")
                reply = str(found.notice_reply).encode()
            else:
                if now >= found.notice_until:
                    raise RevocationClosed(f"{device_id}: the notice period is over")
                # Incremented in the statement, as next_outbound_seq does: a push sealed
                # at the same moment (push_notice) must not get the same number.
                seq = int(
                    conn.execute(
                        update(devices)
                        .where(devices.c.device_id == device_id)
                        .values(outbound_seq=devices.c.outbound_seq + 1)
                        .returning(devices.c.outbound_seq)
                    ).scalar_one()
                )
                sealed = seal(seq)
                conn.execute(
                    update(device_revocations)
                    .where(device_revocations.c.device_id == device_id)
                    .values(
                        notice_sent_at=now,
                        notice_mid=mid,
                        notice_exp=sealed.exp,
                        notice_reply=sealed.reply.decode("ascii"),
                    )
                )
                reply = sealed.reply
            conn.execute(
                insert(seen_jti).values(device_id=device_id, jti=request.jti, exp=request.exp)
            )
            conn.execute(
                update(replay_windows)
                .where(replay_windows.c.device_id == device_id)
                .values(highest_seq=highest, bitmap=format(bitmap, "x"))
            )
        return reply

    def notices_to_push(self, *, now: float, limit: int = 100) -> list[str]:
        """Revoked devices not yet told, whose notice was not pushed yet."""
        query = (
            select(device_revocations.c.device_id)
            .join(devices, devices.c.device_id == device_revocations.c.device_id)
            .where(
                devices.c.status == DeviceStatus.REVOKED.value,
                devices.c.signing_kid.is_not(None),
                device_revocations.c.notice_sent_at.is_(None),
                device_revocations.c.notice_pushed_at.is_(None),
                device_revocations.c.notice_until > now,
            )
            .order_by(device_revocations.c.revoked_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [str(row.device_id) for row in conn.execute(query)]

    def claim_notice_push(self, device_id: str, *, now: float) -> bool:
        """Claim the one MQTT push of ``device_id``'s notice; False if another has it."""
        with self._write() as conn:
            claimed = conn.execute(
                update(device_revocations)
                .where(
                    device_revocations.c.device_id == device_id,
                    device_revocations.c.notice_pushed_at.is_(None),
                    device_revocations.c.notice_sent_at.is_(None),
                )
                .values(notice_pushed_at=now)
            ).rowcount
        return claimed == 1

    # -- certificates and CRLs ------------------------------------------------------------
    def revoked_certificates(self) -> list[RevokedCertificate]:
        with self._read() as conn:
            return _revoked(conn)

    def latest_crl(self) -> CrlRecord | None:
        query = select(crls).order_by(crls.c.number.desc()).limit(1)
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _crl_from_row(row)

    def publish_crl(self, build: CrlBuilder) -> CrlRecord:
        """Sign a CRL over every revoked certificate, numbered one above the newest.

        Two replicas publishing at once both build number N; the second insert fails
        on the primary key and that replica returns the winner's CRL instead.
        """
        try:
            with self._write() as conn:
                newest = conn.scalar(select(func.max(crls.c.number)))
                number = int(newest or 0) + 1
                this_update, next_update, der = build(number, _revoked(conn))
                conn.execute(
                    insert(crls).values(
                        number=number, this_update=this_update, next_update=next_update, der=der
                    )
                )
                return CrlRecord(number, this_update, next_update, der)
        except IntegrityError:
            latest = self.latest_crl()
            if latest is None:  # pragma: no cover - a conflict means a row exists
                raise
            return latest


def _revoked(conn: Connection) -> list[RevokedCertificate]:
    query = select(revoked_certificates).order_by(
        revoked_certificates.c.revoked_at, revoked_certificates.c.serial
    )
    return [
        RevokedCertificate(
            serial=int(row.serial, 16),
            device_id=row.device_id,
            revoked_at=row.revoked_at,
            code=row.code,
        )
        for row in conn.execute(query)
    ]


def _crl_from_row(row: Row[Any]) -> CrlRecord:
    return CrlRecord(
        number=int(row.number),
        this_update=row.this_update,
        next_update=row.next_update,
        der=bytes(row.der),
    )
