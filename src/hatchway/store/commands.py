"""Operator commands queued for a device and the device's results.

A command moves queued -> delivered -> done along ``COMMAND_TRANSITIONS`` (US
11,546,310 B2 claim 5: commands sent to the device over the message-level channel).

Each delivery is a row of ``command_deliveries`` that keeps the sealed COMMAND
message and the ``mid`` of the poll it answered, and is written in the same
transaction that picks the command. So a poll is answered by one delivery however
often it is retransmitted or replayed, and a command is handed out again only once
every earlier delivery has expired (issue 7, part 2 item 2). A result must name,
in ``irt``, the jti of one of that command's deliveries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import exists, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from hatchway.store._base import RepositoryBase, check_id, dump_json, load_json, load_optional_json
from hatchway.store.errors import InvalidTransition, UnknownCommand, UnknownDevice
from hatchway.store.records import (
    COMMAND_TRANSITIONS,
    CommandRecord,
    CommandStatus,
    Delivery,
    DeviceStatus,
    JsonObject,
    SealedDelivery,
    sources_of,
)
from hatchway.store.schema import command_deliveries, commands, devices, replay_windows

SealCommand = Callable[[CommandRecord], SealedDelivery]
"""``seal(command) -> SealedDelivery``: seal the COMMAND message that carries it."""

_PENDING = (CommandStatus.QUEUED.value, CommandStatus.DELIVERED.value)


def _command_from_row(row: Row[Any]) -> CommandRecord:
    return CommandRecord(
        command_id=row.command_id,
        device_id=row.device_id,
        body=load_json(row.body),
        status=CommandStatus(row.status),
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        delivery_jti=row.delivery_jti,
        result=load_optional_json(row.result),
        completed_at=row.completed_at,
    )


def _fetch_command(conn: Connection, command_id: str) -> CommandRecord | None:
    row = conn.execute(select(commands).where(commands.c.command_id == command_id)).one_or_none()
    return None if row is None else _command_from_row(row)


class CommandRepository(RepositoryBase):
    """The operator -> device command queue."""

    def queue_command(self, device_id: str, body: JsonObject, *, now: float) -> str:
        """Queue ``body`` for ``device_id``; returns the new command id (uuid4 hex)."""
        body_text = dump_json(body)
        command_id = uuid.uuid4().hex
        with self._write() as conn:
            known = conn.scalar(select(devices.c.device_id).where(devices.c.device_id == device_id))
            if known is None:
                raise UnknownDevice(device_id)
            conn.execute(
                insert(commands).values(
                    command_id=command_id,
                    device_id=device_id,
                    body=body_text,
                    status=CommandStatus.QUEUED.value,
                    created_at=now,
                )
            )
        return command_id

    def pending_commands(self, device_id: str, *, limit: int = 10) -> list[CommandRecord]:
        """Queued or delivered-but-unanswered commands, oldest first."""
        query = (
            select(commands)
            .where(commands.c.device_id == device_id, commands.c.status.in_(_PENDING))
            .order_by(commands.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [_command_from_row(row) for row in conn.execute(query)]

    def queued_commands(self, *, limit: int = 100) -> list[CommandRecord]:
        """Never-delivered commands of enrolled devices, oldest first (MQTT push sweep)."""
        query = (
            select(commands)
            .join(devices, devices.c.device_id == commands.c.device_id)
            .where(
                commands.c.status == CommandStatus.QUEUED.value,
                devices.c.status == DeviceStatus.ENROLLED.value,
            )
            .order_by(commands.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [_command_from_row(row) for row in conn.execute(query)]

    def claim_command_delivery(
        self, command_id: str, device_id: str, *, sealed: SealedDelivery, now: float
    ) -> bool:
        """Record a server-initiated delivery (an MQTT push) of a never-delivered command.

        queued -> delivered, only from queued, so of every replica racing to push the
        same command exactly one gets True and publishes it. The push is recorded as a
        delivery without a poll ``mid``, so a result may name its ``jti``; its ``exp``
        is the time of the push, not of the message: a push never holds a poll back,
        because the device may not be listening on MQTT at all (a poll then delivers
        the command again, and the first result wins). The device's replay-window row
        is locked first, as ``deliver_command`` does, so a poll and a push of one device
        never interleave.
        """
        check_id("jti", sealed.jti)
        with self._write() as conn:
            locked = conn.execute(
                select(replay_windows.c.device_id)
                .where(replay_windows.c.device_id == device_id)
                .with_for_update()
            ).one_or_none()
            if locked is None:
                return False
            claimed = conn.execute(
                update(commands)
                .where(
                    commands.c.command_id == command_id,
                    commands.c.device_id == device_id,
                    commands.c.status == CommandStatus.QUEUED.value,
                )
                .values(
                    status=CommandStatus.DELIVERED.value,
                    delivered_at=now,
                    delivery_jti=sealed.jti,
                )
            )
            if claimed.rowcount != 1:
                return False
            conn.execute(
                insert(command_deliveries).values(
                    command_id=command_id,
                    jti=sealed.jti,
                    device_id=device_id,
                    poll_mid=None,
                    delivered_at=now,
                    exp=now,
                    reply=sealed.reply.decode("ascii"),
                )
            )
            return True

    def get_command(self, command_id: str) -> CommandRecord | None:
        with self._read() as conn:
            return _fetch_command(conn, command_id)

    def deliver_command(
        self,
        device_id: str,
        *,
        mid: str | None,
        now: float,
        seal: SealCommand,
        retransmission: bool = False,
    ) -> Delivery | None:
        """Answer the poll ``mid`` of ``device_id`` with a command, or ``None``.

        A poll whose ``mid`` was answered with a delivery gets that same sealed reply
        back (``repeated``) while it is unexpired, and ``None`` afterwards. A
        ``retransmission`` (its ``mid`` was stored before) never gets a new delivery:
        its first copy was answered "no command", or a late copy of it would hand a
        command to a connection the device has given up on. Otherwise the oldest
        command without an unexpired delivery is sealed by ``seal`` (inside the
        transaction, so the choice, the jti and the stored reply commit together)
        and recorded as delivered.

        The device's replay-window row is locked first, as ``accept_message`` does,
        so polls from one device are answered one at a time on both engines.
        """
        if mid is not None:
            check_id("mid", mid)
        with self._write() as conn:
            locked = conn.execute(
                select(replay_windows.c.device_id)
                .where(replay_windows.c.device_id == device_id)
                .with_for_update()
            ).one_or_none()
            if locked is None:
                raise UnknownDevice(device_id)
            if mid is not None:
                earlier = conn.execute(
                    select(
                        command_deliveries.c.command_id,
                        command_deliveries.c.jti,
                        command_deliveries.c.exp,
                        command_deliveries.c.reply,
                    ).where(
                        command_deliveries.c.device_id == device_id,
                        command_deliveries.c.poll_mid == mid,
                    )
                ).one_or_none()
                if earlier is not None:
                    if earlier.exp <= now:
                        return None  # the device could not open it any more
                    return Delivery(
                        command_id=earlier.command_id,
                        jti=earlier.jti,
                        reply=earlier.reply.encode("ascii"),
                        repeated=True,
                    )
            if retransmission:
                return None
            live = exists().where(
                command_deliveries.c.command_id == commands.c.command_id,
                command_deliveries.c.exp > now,
            )
            row = conn.execute(
                select(commands)
                .where(
                    commands.c.device_id == device_id,
                    commands.c.status.in_(_PENDING),
                    ~live,
                )
                .order_by(commands.c.id)
                .limit(1)
            ).one_or_none()
            if row is None:
                return None
            command = _command_from_row(row)
            sealed = seal(command)
            check_id("jti", sealed.jti)
            conn.execute(
                insert(command_deliveries).values(
                    command_id=command.command_id,
                    jti=sealed.jti,
                    device_id=device_id,
                    poll_mid=mid,
                    delivered_at=now,
                    exp=sealed.exp,
                    reply=sealed.reply.decode("ascii"),
                )
            )
            self._move_command(
                conn,
                command.command_id,
                device_id,
                CommandStatus.DELIVERED,
                {"delivered_at": now, "delivery_jti": sealed.jti},
            )
        return Delivery(
            command_id=command.command_id, jti=sealed.jti, reply=sealed.reply, repeated=False
        )

    def answers_delivery(self, device_id: str, command_id: str, jti: str) -> bool:
        """Whether ``jti`` named a delivery of ``device_id``'s command ``command_id``."""
        delivered = exists().where(
            command_deliveries.c.command_id == commands.c.command_id,
            command_deliveries.c.jti == jti,
        )
        query = select(commands.c.id).where(
            commands.c.command_id == command_id,
            commands.c.device_id == device_id,
            # delivery_jti alone covers commands delivered before revision 0005.
            or_(commands.c.delivery_jti == jti, delivered),
        )
        with self._read() as conn:
            return conn.execute(query).first() is not None

    def record_command_result(
        self, device_id: str, command_id: str, result: JsonObject, *, now: float
    ) -> None:
        """Store the device's result; raises UnknownCommand if not this device's."""
        values = {"result": dump_json(result), "completed_at": now}
        with self._write() as conn:
            self._move_command(conn, command_id, device_id, CommandStatus.DONE, values)

    @staticmethod
    def _move_command(
        conn: Connection,
        command_id: str,
        device_id: str | None,
        target: CommandStatus,
        values: Mapping[str, object],
    ) -> None:
        allowed = [s.value for s in sources_of(COMMAND_TRANSITIONS, target)]
        guards = [commands.c.command_id == command_id, commands.c.status.in_(allowed)]
        if device_id is not None:
            # A device may only answer its own commands; a foreign id looks unknown.
            guards.append(commands.c.device_id == device_id)
        result = conn.execute(update(commands).where(*guards).values(status=target.value, **values))
        if result.rowcount == 1:
            return
        current = _fetch_command(conn, command_id)
        if current is None or (device_id is not None and current.device_id != device_id):
            raise UnknownCommand(command_id)
        raise InvalidTransition(f"command {command_id}: {current.status} -> {target}")
