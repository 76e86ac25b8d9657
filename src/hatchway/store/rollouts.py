"""Rollouts, offers and device reports (issue 9 "Rollouts"; revision 0006_firmware).

A rollout offers one release to the enrolled devices of a group, wave by wave
(``hatchway.firmware.rollout``). An offer is a row of ``commands`` whose body is
``{"firmware_offer": <release>}`` (plus ``confirm_within`` when the rollout sets it):
it travels through the same idempotent delivery machinery as any command
(``Store.deliver_command``, ``claim_command_delivery``), so a retransmitted poll gets
the same sealed bytes and an offer is handed out again only after its delivery
expired unanswered. The message service seals it as ``FIRMWARE_UPDATE``
(``flows/firmware.py``), and the device's first report marks it done.

Every decision runs inside the transaction that records the report, under a lock
on the rollout row: the next wave opens, or the rollout pauses itself, exactly
once however many replicas record reports at the same time.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.engine import Connection, Row

from hatchway.firmware.rollout import (
    DEVICE_FW_TRANSITIONS,
    FAILED,
    FINAL,
    ROLLOUT_TRANSITIONS,
    FwState,
    RolloutState,
    next_step,
    plan_waves,
)
from hatchway.store._base import RepositoryBase, dump_json
from hatchway.store.errors import InvalidTransition
from hatchway.store.firmware import enrolled_members
from hatchway.store.firmware_records import (
    DeviceFirmware,
    ReportOutcome,
    ReportStatus,
    RolloutExists,
    RolloutRecord,
    UnknownRelease,
)
from hatchway.store.records import CommandStatus, sources_of
from hatchway.store.schema import commands, firmware_devices, firmware_releases, firmware_rollouts

__all__ = ["CONFIRM_KEY", "OFFER_KEY", "RolloutRepository"]

#: The body key that marks a command row as a firmware offer.
OFFER_KEY = "firmware_offer"
CONFIRM_KEY = "confirm_within"
_LIVE = (RolloutState.ACTIVE.value, RolloutState.PAUSED.value)
_PENDING_COMMAND = (CommandStatus.QUEUED.value, CommandStatus.DELIVERED.value)


def _rollout_from_row(row: Row[Any]) -> RolloutRecord:
    return RolloutRecord(
        rollout_id=row.rollout_id,
        release_id=row.release_id,
        group_name=row.group_name,
        waves=tuple(json.loads(row.waves)),
        wave=row.wave,
        max_failures=row.max_failures,
        confirm_within=row.confirm_within,
        state=RolloutState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _device_from_row(row: Row[Any]) -> DeviceFirmware:
    return DeviceFirmware(
        release_id=row.release_id,
        device_id=row.device_id,
        rollout_id=row.rollout_id,
        wave=row.wave,
        state=FwState(row.state),
        progress=row.progress,
        reason=row.reason,
        updated_at=row.updated_at,
    )


def _latest_rollout(conn: Connection, release_id: str, *, lock: bool) -> RolloutRecord | None:
    query = (
        select(firmware_rollouts)
        .where(firmware_rollouts.c.release_id == release_id)
        .order_by(firmware_rollouts.c.created_at.desc(), firmware_rollouts.c.rollout_id)
        .limit(1)
    )
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    return None if row is None else _rollout_from_row(row)


class RolloutRepository(RepositoryBase):
    """Rollouts of published releases, their offers and the devices' reports."""

    def start_rollout(
        self,
        release_id: str,
        group: str,
        *,
        waves: str = "100%",
        max_failures: int = 0,
        confirm_within: int | None = None,
        now: float,
    ) -> RolloutRecord:
        """Plan the waves over the group's enrolled devices and offer the first wave.

        Devices that already have a state for this release (an earlier rollout) are
        left out; ``RolloutExists`` if the release has an active or paused rollout.
        """
        if type(max_failures) is not int or max_failures < 0:
            raise ValueError("--max-failures must be a non-negative integer")
        if confirm_within is not None and (type(confirm_within) is not int or confirm_within <= 0):
            raise ValueError("--confirm-within must be a positive number of seconds")
        with self._write() as conn:
            known = conn.scalar(
                select(firmware_releases.c.release_id).where(
                    firmware_releases.c.release_id == release_id
                )
            )
            if known is None:
                raise UnknownRelease(release_id)
            live = _latest_rollout(conn, release_id, lock=True)
            if live is not None and live.state.value in _LIVE:
                raise RolloutExists(f"release {release_id} already has a {live.state} rollout")
            taken = set(
                conn.scalars(
                    select(firmware_devices.c.device_id).where(
                        firmware_devices.c.release_id == release_id
                    )
                )
            )
            members = [d for d in enrolled_members(conn, group) if d not in taken]
            if not members:
                raise ValueError(f"group {group!r} has no enrolled device left to offer it to")
            plan = plan_waves(waves, len(members))
            rollout_id = uuid.uuid4().hex
            conn.execute(
                insert(firmware_rollouts).values(
                    rollout_id=rollout_id,
                    release_id=release_id,
                    group_name=group,
                    waves=json.dumps(plan),
                    wave=0,
                    max_failures=max_failures,
                    confirm_within=confirm_within,
                    state=RolloutState.ACTIVE.value,
                    created_at=now,
                    updated_at=now,
                )
            )
            wave = 0
            for position, device_id in enumerate(members[: plan[-1]]):
                while position >= plan[wave]:
                    wave += 1
                conn.execute(
                    insert(firmware_devices).values(
                        release_id=release_id,
                        device_id=device_id,
                        rollout_id=rollout_id,
                        wave=wave,
                        state=FwState.PENDING.value,
                        updated_at=now,
                    )
                )
            self._open_wave(conn, rollout_id, release_id, 0, confirm_within, now)
            created = _latest_rollout(conn, release_id, lock=False)
        assert created is not None  # noqa: S101 - inserted in this transaction
        return created

    def set_rollout_state(
        self, release_id: str, target: RolloutState, *, now: float
    ) -> RolloutRecord:
        """Pause, resume or cancel the release's latest rollout (``ROLLOUT_TRANSITIONS``).

        Resume re-runs the wave decision (the current wave may have finished while
        paused); cancel withdraws every offer not delivered yet. Offers already
        delivered cannot be taken back: those devices report as usual.
        """
        with self._write() as conn:
            rollout = _latest_rollout(conn, release_id, lock=True)
            if rollout is None:
                raise UnknownRelease(f"release {release_id} has no rollout")
            if target not in ROLLOUT_TRANSITIONS[rollout.state]:
                raise InvalidTransition(f"the rollout is {rollout.state}; it cannot be {target}")
            self._set_state(conn, rollout.rollout_id, target, now)
            if target is RolloutState.ACTIVE:
                self._advance(conn, rollout, RolloutState.ACTIVE, failed_now=False, now=now)
            elif target is RolloutState.CANCELLED:
                self._withdraw(conn, rollout.rollout_id, now)
            after = _latest_rollout(conn, release_id, lock=False)
        assert after is not None  # noqa: S101
        return after

    def rollout_status(self, release_id: str) -> tuple[RolloutRecord | None, list[DeviceFirmware]]:
        """The latest rollout and every device's state for the release, by device id."""
        query = (
            select(firmware_devices)
            .where(firmware_devices.c.release_id == release_id)
            .order_by(firmware_devices.c.device_id)
        )
        with self._read() as conn:
            rollout = _latest_rollout(conn, release_id, lock=False)
            return rollout, [_device_from_row(r) for r in conn.execute(query)]

    def record_firmware_report(
        self,
        device_id: str,
        release_id: str,
        target: FwState,
        *,
        reason: str | None = None,
        progress: int | None = None,
        now: float,
    ) -> ReportOutcome:
        """Move the device along ``DEVICE_FW_TRANSITIONS`` and advance its rollout."""
        key = (
            firmware_devices.c.release_id == release_id,
            firmware_devices.c.device_id == device_id,
        )
        with self._write() as conn:
            rollout_id = conn.scalar(select(firmware_devices.c.rollout_id).where(*key))
            if rollout_id is None:
                return ReportOutcome(ReportStatus.REFUSED, f"release {release_id} was not offered")
            # Lock order: the rollout row first, then the device row, as _advance does.
            row = conn.execute(
                select(firmware_rollouts)
                .where(firmware_rollouts.c.rollout_id == rollout_id)
                .with_for_update()
            ).one()
            rollout = _rollout_from_row(row)
            device = conn.execute(select(firmware_devices).where(*key).with_for_update()).one()
            current = FwState(device.state)
            if current is target and target in FINAL:
                return ReportOutcome(ReportStatus.DUPLICATE, f"already {target}", rollout.state)
            if target not in DEVICE_FW_TRANSITIONS[current]:
                return ReportOutcome(
                    ReportStatus.REFUSED, f"{current} -> {target} is not allowed", rollout.state
                )
            keep = device.progress if target is FwState.DOWNLOADING else None
            conn.execute(
                update(firmware_devices)
                .where(*key, firmware_devices.c.state == current.value)
                .values(
                    state=target.value,
                    progress=progress if progress is not None else keep,
                    reason=reason,
                    updated_at=now,
                )
            )
            if device.command_id is not None:
                # The device has the offer: it is done, never delivered again.
                conn.execute(
                    update(commands)
                    .where(
                        commands.c.command_id == device.command_id,
                        commands.c.status.in_(_PENDING_COMMAND),
                    )
                    .values(
                        status=CommandStatus.DONE.value,
                        result=dump_json({"firmware": target.value}),
                        completed_at=now,
                    )
                )
            state = self._advance(
                conn, rollout, rollout.state, failed_now=target in FAILED, now=now
            )
        return ReportOutcome(ReportStatus.RECORDED, "", state)

    # -- inside a transaction ---------------------------------------------------------------
    def _advance(
        self,
        conn: Connection,
        rollout: RolloutRecord,
        state: RolloutState,
        *,
        failed_now: bool,
        now: float,
    ) -> RolloutState:
        rid = firmware_devices.c.rollout_id == rollout.rollout_id
        failures = conn.scalar(
            select(func.count())
            .select_from(firmware_devices)
            .where(rid, firmware_devices.c.state.in_([s.value for s in FAILED]))
        )
        open_left = conn.scalar(
            select(
                exists().where(
                    rid,
                    firmware_devices.c.wave <= rollout.wave,
                    firmware_devices.c.state.not_in([s.value for s in FINAL]),
                )
            )
        )
        step = next_step(
            state,
            rollout.wave,
            len(rollout.waves),
            failures=int(failures or 0),
            max_failures=rollout.max_failures,
            wave_done=not open_left,
            failed_now=failed_now,
        )
        if step.state is not state:
            self._set_state(conn, rollout.rollout_id, step.state, now)
        if step.open_wave is not None:
            self._open_wave(
                conn,
                rollout.rollout_id,
                rollout.release_id,
                step.open_wave,
                rollout.confirm_within,
                now,
            )
        return step.state

    @staticmethod
    def _set_state(conn: Connection, rollout_id: str, target: RolloutState, now: float) -> None:
        allowed = [s.value for s in sources_of(ROLLOUT_TRANSITIONS, target)]
        done = conn.execute(
            update(firmware_rollouts)
            .where(
                firmware_rollouts.c.rollout_id == rollout_id,
                firmware_rollouts.c.state.in_(allowed),
            )
            .values(state=target.value, updated_at=now)
        )
        if done.rowcount != 1:
            raise InvalidTransition(f"rollout {rollout_id}: -> {target} not allowed")

    @staticmethod
    def _open_wave(
        conn: Connection,
        rollout_id: str,
        release_id: str,
        wave: int,
        confirm_within: int | None,
        now: float,
    ) -> None:
        """Queue an offer (a command row) for every pending device of ``wave``."""
        conn.execute(
            update(firmware_rollouts)
            .where(firmware_rollouts.c.rollout_id == rollout_id)
            .values(wave=wave, updated_at=now)
        )
        pending = list(
            conn.scalars(
                select(firmware_devices.c.device_id).where(
                    firmware_devices.c.rollout_id == rollout_id,
                    firmware_devices.c.wave == wave,
                    firmware_devices.c.state == FwState.PENDING.value,
                )
            )
        )
        offer: dict[str, Any] = {OFFER_KEY: release_id}
        if confirm_within is not None:
            offer[CONFIRM_KEY] = confirm_within
        body = dump_json(offer)
        for device_id in pending:
            command_id = uuid.uuid4().hex
            conn.execute(
                insert(commands).values(
                    command_id=command_id,
                    device_id=device_id,
                    body=body,
                    status=CommandStatus.QUEUED.value,
                    created_at=now,
                )
            )
            conn.execute(
                update(firmware_devices)
                .where(
                    firmware_devices.c.release_id == release_id,
                    firmware_devices.c.device_id == device_id,
                )
                .values(state=FwState.OFFERED.value, command_id=command_id, updated_at=now)
            )

    @staticmethod
    def _withdraw(conn: Connection, rollout_id: str, now: float) -> None:
        """Cancel: pending devices, and offers still queued, become ``withdrawn``."""
        rid = firmware_devices.c.rollout_id == rollout_id
        undelivered = list(
            conn.scalars(
                select(commands.c.command_id)
                .join(firmware_devices, firmware_devices.c.command_id == commands.c.command_id)
                .where(
                    rid,
                    firmware_devices.c.state == FwState.OFFERED.value,
                    commands.c.status == CommandStatus.QUEUED.value,
                )
            )
        )
        if undelivered:
            conn.execute(delete(commands).where(commands.c.command_id.in_(undelivered)))
        withdrawable = sources_of(DEVICE_FW_TRANSITIONS, FwState.WITHDRAWN)
        conn.execute(
            update(firmware_devices)
            .where(
                rid,
                firmware_devices.c.state.in_([s.value for s in withdrawable]),
                (firmware_devices.c.state == FwState.PENDING.value)
                | firmware_devices.c.command_id.in_(undelivered or [""]),
            )
            .values(state=FwState.WITHDRAWN.value, updated_at=now)
        )
