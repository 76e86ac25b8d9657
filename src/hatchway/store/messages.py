"""Device messages: replay check, jti record and storage in one transaction.

US 11,546,310 B2 claim 1 step 5 lets nested JWTs travel over any transport with
no TLS session to stop replays, so the server must reject a replayed message by
itself. The sequence window is kept by the protocol core (``advance``); the store
makes window update, jti record and message insert one atomic unit, and
serialises concurrent messages from the same device by locking its window row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).

``accept_batch`` is group commit (issue 10 §1): many messages in one transaction and
one fsync, each in its own savepoint, so a message refused mid-batch leaves no trace
and does not fail the others. Items run in the order given (the caller keeps each
device's order) and see the writes of the items before them, so two messages of one
device, or a retransmitted ``mid``, inside one batch behave exactly as they would in
separate transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row

from hatchway.errors import HatchwayError
from hatchway.store._base import RepositoryBase, check_id, dump_json, load_json
from hatchway.store.errors import ReplayedJti, UnknownDevice
from hatchway.store.records import AcceptResult, DeviceStatus, MessageRecord
from hatchway.store.schema import devices, messages, replay_windows, seen_jti

Advance = Callable[[int, int], tuple[int, int]]
"""``advance(highest_seq, bitmap) -> (highest_seq, bitmap)``; raises to reject."""

# highest_seq is a signed 64-bit column on both engines.
_MAX_SEQ = 2**63 - 1


def _message_from_row(row: Row[Any]) -> MessageRecord:
    return MessageRecord(
        message_id=row.id,
        device_id=row.device_id,
        seq=row.seq,
        jti=row.jti,
        mid=row.mid,
        typ=row.typ,
        body=load_json(row.body),
        received_at=row.received_at,
    )


@dataclass(frozen=True, slots=True)
class AcceptRequest:
    """One message for :meth:`MessageRepository.accept_batch` (same fields as
    :meth:`MessageRepository.accept_message`)."""

    device_id: str
    seq: int
    jti: str
    exp: float
    mid: str | None
    typ: str
    body: dict[str, Any]
    now: float
    advance: Advance
    signing_kid: str | None = None

    def checked_body(self) -> str:
        """Validate the ids and serialise the body, before any lock is taken."""
        check_id("jti", self.jti)
        check_id("typ", self.typ)
        if self.mid is not None:
            check_id("mid", self.mid)
        return dump_json(self.body)


#: What a refused item of a batch carries instead of a result. Anything else raised
#: inside a batch (the database is gone...) fails the whole batch.
ITEM_ERRORS = (HatchwayError, ValueError, TypeError)


class MessageRepository(RepositoryBase):
    """Inbound messages and the server's outbound sequence numbers."""

    def accept_message(
        self,
        device_id: str,
        *,
        seq: int,
        jti: str,
        exp: float,
        mid: str | None,
        typ: str,
        body: dict[str, Any],
        now: float,
        advance: Advance,
        signing_kid: str | None = None,
    ) -> AcceptResult:
        """Atomically check for replay, record ``jti`` and store the message.

        ``advance`` gets the stored window and returns the new one, raising to
        reject ``seq``; its exception propagates and nothing is written. A reused
        ``jti`` raises :class:`ReplayedJti`. A message whose ``mid`` was stored
        before is not stored again, but its seq and jti are still consumed (it is
        a retransmission under fresh protection), and the earlier id returned.

        The device must be enrolled and, when ``signing_kid`` is given, still hold
        that signing key: a key cached by a replica before the device was reset or
        re-enrolled is refused here, inside the transaction.
        """
        request = AcceptRequest(device_id, seq, jti, exp, mid, typ, body, now, advance, signing_kid)
        body_text = request.checked_body()  # fail on bad input before locking
        with self._write() as conn:
            return _accept_in(conn, request, body_text)

    def accept_batch(
        self, requests: Sequence[AcceptRequest]
    ) -> list[AcceptResult | Exception]:
        """Accept every request in one transaction; one commit (one fsync) for all.

        Returns one entry per request, in order: its :class:`AcceptResult`, or the
        error that refused it (``advance``'s exception, :class:`ReplayedJti`,
        :class:`UnknownDevice`, ``ValueError``, ``TypeError``). A refused item is rolled back to its
        savepoint and leaves no trace. Any other exception rolls back the whole batch
        and propagates: nothing in it was accepted. Nothing is durable, and no
        result may be acted on, before this method returns.
        """
        outcomes: list[AcceptResult | Exception] = []
        with self._write() as conn:
            for request in requests:
                try:
                    body_text = request.checked_body()
                    with conn.begin_nested():
                        outcomes.append(_accept_in(conn, request, body_text))
                except ITEM_ERRORS as exc:
                    outcomes.append(exc)
        return outcomes

    def list_messages(self, device_id: str, *, limit: int = 100) -> list[MessageRecord]:
        """The device's ``limit`` most recent messages, newest last."""
        query = (
            select(messages)
            .where(messages.c.device_id == device_id)
            .order_by(messages.c.id.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_message_from_row(row) for row in reversed(rows)]

    def count_messages(self, device_id: str) -> int:
        query = select(func.count()).select_from(messages).where(messages.c.device_id == device_id)
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def next_outbound_seq(self, device_id: str) -> int:
        """Hand out the next server->device sequence number (1, 2, 3, ...).

        A single ``UPDATE ... RETURNING`` increments and reads in one statement,
        so concurrent callers and restarts never see the same number twice.
        """
        with self._write() as conn:
            value = conn.execute(
                update(devices)
                .where(devices.c.device_id == device_id)
                .values(outbound_seq=devices.c.outbound_seq + 1)
                .returning(devices.c.outbound_seq)
            ).scalar_one_or_none()
        if value is None:
            raise UnknownDevice(device_id)
        return int(value)


def _accept_in(conn: Connection, request: AcceptRequest, body_text: str) -> AcceptResult:
    """The replay check, jti record and insert of one message, inside ``conn``'s
    transaction (see :meth:`MessageRepository.accept_message`)."""
    device_id, seq, jti, mid = request.device_id, request.seq, request.jti, request.mid
    exp, typ, now, signing_kid = request.exp, request.typ, request.now, request.signing_kid
    advance = request.advance
    window = conn.execute(
        select(replay_windows.c.highest_seq, replay_windows.c.bitmap)
        .where(replay_windows.c.device_id == device_id)
        .with_for_update()
    ).one_or_none()
    if window is None:
        raise UnknownDevice(device_id)
    highest, bitmap = advance(window.highest_seq, int(window.bitmap, 16))
    if not 0 <= highest <= _MAX_SEQ or bitmap < 0:
        raise ValueError("advance returned an out-of-range window")
    # The window row lock means no other transaction can insert this
    # device's jti between this check and the insert below.
    seen = conn.execute(
        select(seen_jti.c.jti).where(seen_jti.c.device_id == device_id, seen_jti.c.jti == jti)
    ).first()
    if seen is not None:
        raise ReplayedJti()
    conn.execute(insert(seen_jti).values(device_id=device_id, jti=jti, exp=exp))
    existing = None
    if mid is not None:
        existing = conn.scalar(
            select(messages.c.id).where(messages.c.device_id == device_id, messages.c.mid == mid)
        )
    if existing is None:
        inserted = conn.execute(
            insert(messages)
            .values(
                device_id=device_id,
                seq=seq,
                jti=jti,
                mid=mid,
                typ=typ,
                body=body_text,
                received_at=now,
            )
            .returning(messages.c.id)
        )
        message_id = int(inserted.scalar_one())
    else:
        message_id = int(existing)
    conn.execute(
        update(replay_windows)
        .where(replay_windows.c.device_id == device_id)
        .values(highest_seq=highest, bitmap=format(bitmap, "x"))
    )
    # Checked inside the transaction: a device de-registered on another replica
    # (whose keys may still be cached there) can no longer get a message in.
    reply_seq = conn.execute(
        update(devices)
        .where(
            devices.c.device_id == device_id,
            devices.c.status == DeviceStatus.ENROLLED.value,
            *([devices.c.signing_kid == signing_kid] if signing_kid else []),
        )
        .values(outbound_seq=devices.c.outbound_seq + 1)
        .returning(devices.c.outbound_seq)
    ).scalar_one_or_none()
    if reply_seq is None:
        raise UnknownDevice(f"{device_id} is not enrolled with that key")
    return AcceptResult(
        duplicate=existing is not None, message_id=message_id, reply_seq=int(reply_seq)
    )
