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

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import BindParameter

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
    #: ``body`` already serialised by :meth:`checked_body` (a worker process did it
    #: before handing the request to the shared writer); ``body`` is then ignored.
    body_text: str | None = None

    def checked_body(self) -> str:
        """Validate the ids and serialise the body, before any lock is taken."""
        check_id("jti", self.jti)
        check_id("typ", self.typ)
        if self.mid is not None:
            check_id("mid", self.mid)
        return self.body_text if self.body_text is not None else dump_json(self.body)


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

    def accept_batch(self, requests: Sequence[AcceptRequest]) -> list[AcceptResult | Exception]:
        """Accept every request in one transaction; one commit (one fsync) for all.

        Returns one entry per request, in order: its :class:`AcceptResult`, or the
        error that refused it (``advance``'s exception, :class:`ReplayedJti`,
        :class:`UnknownDevice`, ``ValueError``, ``TypeError``), exactly what
        :meth:`accept_message` would have raised for it in that order. A refused
        item writes nothing. Any other exception rolls back the whole batch and
        propagates: nothing in it was accepted. Nothing is durable, and no result
        may be acted on, before this method returns.

        Set-based, so the statements per batch are a constant few: the windows and
        device rows are read (and locked) once, replay checks run in memory in
        request order, and the writes go out as one executemany each.
        """
        outcomes: list[AcceptResult | Exception] = []
        if not requests:
            return outcomes
        with self._write() as conn:
            batch = _Batch.load(conn, requests)
            for request in requests:
                try:
                    outcomes.append(batch.accept(request))
                except ITEM_ERRORS as exc:
                    outcomes.append(exc)
            batch.write(conn)
        # Message ids of first copies are known only after the insert.
        return [batch.resolve(outcome) for outcome in outcomes]

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


# The batch's statements, built once: constructing SQLAlchemy statements per batch
# showed up in the writer thread's profile. ``expanding`` parameters take the lists.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_LOAD_WINDOWS = (
    select(replay_windows.c.device_id, replay_windows.c.highest_seq, replay_windows.c.bitmap)
    .where(replay_windows.c.device_id.in_(_IDS))
    .order_by(replay_windows.c.device_id)
    .with_for_update()
)
_LOAD_DEVICES = (
    select(devices.c.device_id, devices.c.status, devices.c.signing_kid, devices.c.outbound_seq)
    .where(devices.c.device_id.in_(_IDS))
    .order_by(devices.c.device_id)
    .with_for_update()
)
_LOAD_JTIS = select(seen_jti.c.device_id, seen_jti.c.jti).where(
    seen_jti.c.device_id.in_(_IDS), seen_jti.c.jti.in_(bindparam("jtis", expanding=True))
)
_LOAD_MIDS = select(messages.c.device_id, messages.c.mid, messages.c.id).where(
    messages.c.device_id.in_(_IDS), messages.c.mid.in_(bindparam("mids", expanding=True))
)
_INSERT_JTIS = insert(seen_jti)
_INSERT_MESSAGES = insert(messages).returning(messages.c.id, sort_by_parameter_order=True)
_UPDATE_WINDOWS = (
    update(replay_windows)
    .where(replay_windows.c.device_id == bindparam("d"))
    .values(highest_seq=bindparam("h"), bitmap=bindparam("b"))
)
_UPDATE_DEVICES = (
    update(devices).where(devices.c.device_id == bindparam("d")).values(outbound_seq=bindparam("o"))
)


class _Batch:
    """In-memory replay state for the devices of one batch, loaded under their locks."""

    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, int]] = {}
        self.devices: dict[str, tuple[str, str | None, int]] = {}  # status, kid, outbound
        self.seen: set[tuple[str, str]] = set()
        self.mids: dict[tuple[str, str], int] = {}  # -> stored id, or -(pending index + 1)
        self.jti_rows: list[dict[str, Any]] = []
        self.message_rows: list[dict[str, Any]] = []
        self.touched: dict[str, None] = {}  # devices whose window and counter moved
        self.ids: list[int] = []

    @classmethod
    def load(cls, conn: Connection, requests: Sequence[AcceptRequest]) -> _Batch:
        batch = cls()
        ids = sorted({r.device_id for r in requests})  # one lock order for every batch
        for wrow in conn.execute(_LOAD_WINDOWS, {"ids": ids}):
            batch.windows[wrow.device_id] = (wrow.highest_seq, int(wrow.bitmap, 16))
        for drow in conn.execute(_LOAD_DEVICES, {"ids": ids}):
            batch.devices[drow.device_id] = (drow.status, drow.signing_kid, drow.outbound_seq)
        jtis = sorted({r.jti for r in requests if isinstance(r.jti, str)})
        for jrow in conn.execute(_LOAD_JTIS, {"ids": ids, "jtis": jtis}):
            batch.seen.add((jrow.device_id, jrow.jti))
        mids = sorted({r.mid for r in requests if isinstance(r.mid, str)})
        if mids:
            for row in conn.execute(_LOAD_MIDS, {"ids": ids, "mids": mids}):
                batch.mids[(row.device_id, row.mid)] = int(row.id)
        return batch

    def accept(self, request: AcceptRequest) -> AcceptResult:
        """The checks of :func:`_accept_in`, in its order, against the batch's state."""
        body_text = request.checked_body()
        device_id = request.device_id
        window = self.windows.get(device_id)
        if window is None:
            raise UnknownDevice(device_id)
        highest, bitmap = request.advance(*window)
        if not 0 <= highest <= _MAX_SEQ or bitmap < 0:
            raise ValueError("advance returned an out-of-range window")
        if (device_id, request.jti) in self.seen:
            raise ReplayedJti()
        device = self.devices.get(device_id)
        if (
            device is None
            or device[0] != DeviceStatus.ENROLLED.value
            or (request.signing_kid and device[1] != request.signing_kid)
        ):
            raise UnknownDevice(f"{device_id} is not enrolled with that key")
        # Accepted: from here on, every write of this message is recorded.
        self.seen.add((device_id, request.jti))
        self.jti_rows.append({"device_id": device_id, "jti": request.jti, "exp": request.exp})
        key = (device_id, request.mid) if request.mid is not None else None
        existing = self.mids.get(key) if key is not None else None
        if existing is None:
            self.message_rows.append(
                {
                    "device_id": device_id,
                    "seq": request.seq,
                    "jti": request.jti,
                    "mid": request.mid,
                    "typ": request.typ,
                    "body": body_text,
                    "received_at": request.now,
                }
            )
            pending = -len(self.message_rows)
            if key is not None:
                self.mids[key] = pending
        self.windows[device_id] = (highest, bitmap)
        reply_seq = device[2] + 1
        self.devices[device_id] = (device[0], device[1], reply_seq)
        self.touched[device_id] = None
        return AcceptResult(
            duplicate=existing is not None,
            message_id=existing if existing is not None else pending,
            reply_seq=reply_seq,
        )

    def write(self, conn: Connection) -> None:
        if not self.touched:
            return
        conn.execute(_INSERT_JTIS, self.jti_rows)
        if self.message_rows:
            inserted = conn.execute(_INSERT_MESSAGES, self.message_rows)
            self.ids = [int(row.id) for row in inserted]
        order = sorted(self.touched)
        windows = [
            {"d": d, "h": self.windows[d][0], "b": format(self.windows[d][1], "x")} for d in order
        ]
        conn.execute(_UPDATE_WINDOWS, windows)
        conn.execute(_UPDATE_DEVICES, [{"d": d, "o": self.devices[d][2]} for d in order])

    def resolve(self, outcome: AcceptResult | Exception) -> AcceptResult | Exception:
        """Replace a pending (negative) message id by the id the insert returned."""
        if isinstance(outcome, AcceptResult) and outcome.message_id < 0:
            return AcceptResult(
                duplicate=outcome.duplicate,
                message_id=self.ids[-outcome.message_id - 1],
                reply_seq=outcome.reply_seq,
            )
        return outcome
