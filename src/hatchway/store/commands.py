"""Operator commands queued for a device and the device's results.

A command moves queued -> delivered -> done along ``COMMAND_TRANSITIONS``; the
delivery jti is kept so a result can be tied to the sealed message that carried
the command (US 11,546,310 B2 claim 5: commands sent to the device over the
message-level channel).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row

from hatchway.store._base import RepositoryBase, check_id, dump_json, load_json, load_optional_json
from hatchway.store.errors import InvalidTransition, UnknownCommand, UnknownDevice
from hatchway.store.records import (
    COMMAND_TRANSITIONS,
    CommandRecord,
    CommandStatus,
    DeviceStatus,
    JsonObject,
    sources_of,
)
from hatchway.store.schema import commands, devices

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

    def claim_command_delivery(self, command_id: str, *, jti: str, now: float) -> bool:
        """queued -> delivered with ``jti``, only from queued: True for exactly one caller.

        Every replica may race to push the same command; the one whose conditional
        update lands publishes it, the others see False and skip it.
        """
        check_id("jti", jti)
        with self._write() as conn:
            result = conn.execute(
                update(commands)
                .where(
                    commands.c.command_id == command_id,
                    commands.c.status == CommandStatus.QUEUED.value,
                )
                .values(
                    status=CommandStatus.DELIVERED.value, delivered_at=now, delivery_jti=jti
                )
            )
            return result.rowcount == 1

    def get_command(self, command_id: str) -> CommandRecord | None:
        with self._read() as conn:
            return _fetch_command(conn, command_id)

    def mark_command_delivered(self, command_id: str, *, jti: str, now: float) -> None:
        """Record that the command went out in the sealed message ``jti``.

        Called again on redelivery; the newest delivery's jti and time win.
        """
        check_id("jti", jti)
        with self._write() as conn:
            self._move_command(
                conn,
                command_id,
                None,
                CommandStatus.DELIVERED,
                {"delivered_at": now, "delivery_jti": jti},
            )

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
