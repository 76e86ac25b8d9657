"""Staged rollouts and per-device firmware state: the two transition tables (issue 9, rollouts).

Sans-I/O: the store (``hatchway.store.firmware``) applies these tables inside its
transactions; nothing here reads a clock or a database.

* ``DEVICE_FW_TRANSITIONS``: a device's state for one release. The server moves
  ``pending -> offered`` (its wave started) and ``-> withdrawn`` (cancelled before
  the offer was delivered); every other move is a device report
  (``firmware.wire.DeviceFirmwareState``). Reports may skip forward (a device that
  verified quickly need not report ``downloading``) but never go back, and a final
  state is final. Anything not in the table is refused.
* ``ROLLOUT_TRANSITIONS``: active, paused, cancelled, completed (hawkBit's running,
  paused, stopped, finished).
* ``plan_waves``: ``10%,50%,100%`` or ``5,20,100`` as cumulative device counts.
* ``next_step``: what a rollout does after a report was recorded: auto-pause when
  failures (``refused`` + ``rolled_back``) exceed ``max_failures``, open the next wave
  once every device of the current one is final, complete after the last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hatchway.firmware.errors import RefusalReason
from hatchway.firmware.wire import DeviceFirmwareState, RollbackReason

__all__ = [
    "DEVICE_FW_TRANSITIONS",
    "FAILED",
    "FINAL",
    "ROLLOUT_TRANSITIONS",
    "FwState",
    "RolloutState",
    "Step",
    "check_report",
    "next_step",
    "plan_waves",
]

MAX_WAVES = 20


class FwState(StrEnum):
    """A device's state for one release, as the server records it."""

    PENDING = "pending"  # in a later wave; not offered yet
    OFFERED = "offered"  # the offer is queued or delivered; no report yet
    DOWNLOADING = DeviceFirmwareState.DOWNLOADING.value
    VERIFIED = DeviceFirmwareState.VERIFIED.value
    INSTALLED = DeviceFirmwareState.INSTALLED.value
    CONFIRMED = DeviceFirmwareState.CONFIRMED.value
    ROLLED_BACK = DeviceFirmwareState.ROLLED_BACK.value
    REFUSED = DeviceFirmwareState.REFUSED.value
    WITHDRAWN = "withdrawn"  # the rollout was cancelled before the offer was delivered


class RolloutState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


_S = FwState
_AFTER_OFFER = frozenset(
    {_S.DOWNLOADING, _S.VERIFIED, _S.INSTALLED, _S.CONFIRMED, _S.ROLLED_BACK, _S.REFUSED}
)

DEVICE_FW_TRANSITIONS: Mapping[FwState, frozenset[FwState]] = {
    _S.PENDING: frozenset({_S.OFFERED, _S.WITHDRAWN}),
    _S.OFFERED: _AFTER_OFFER | {_S.WITHDRAWN},
    # downloading -> downloading: a progress report.
    _S.DOWNLOADING: _AFTER_OFFER,
    # A restarted device verifies again (its "verified" is never trusted from disk).
    _S.VERIFIED: frozenset({_S.VERIFIED, _S.INSTALLED, _S.CONFIRMED, _S.ROLLED_BACK, _S.REFUSED}),
    # Installed is past every refusal check: from here it confirms or rolls back.
    _S.INSTALLED: frozenset({_S.INSTALLED, _S.CONFIRMED, _S.ROLLED_BACK}),
    _S.CONFIRMED: frozenset(),
    _S.ROLLED_BACK: frozenset(),
    _S.REFUSED: frozenset(),
    _S.WITHDRAWN: frozenset(),
}

FINAL = frozenset(s for s, targets in DEVICE_FW_TRANSITIONS.items() if not targets)
FAILED = frozenset({_S.REFUSED, _S.ROLLED_BACK})

ROLLOUT_TRANSITIONS: Mapping[RolloutState, frozenset[RolloutState]] = {
    RolloutState.ACTIVE: frozenset(
        {RolloutState.PAUSED, RolloutState.CANCELLED, RolloutState.COMPLETED}
    ),
    RolloutState.PAUSED: frozenset({RolloutState.ACTIVE, RolloutState.CANCELLED}),
    RolloutState.CANCELLED: frozenset(),
    RolloutState.COMPLETED: frozenset(),
}

_REASONS: Mapping[FwState, frozenset[str]] = {
    _S.REFUSED: frozenset(r.value for r in RefusalReason),
    _S.ROLLED_BACK: frozenset(r.value for r in RollbackReason),
}


def check_report(state: object, reason: object, progress: object) -> FwState:
    """A device report's fields, strictly: the state it names, or ``ValueError``.

    ``reason`` is required for (and only for) ``refused`` / ``rolled_back`` and must be
    one of that state's wire values; ``progress`` (0-100) only with ``downloading``.
    """
    if not isinstance(state, str) or state not in DeviceFirmwareState.__members__.values():
        raise ValueError(f"unknown firmware state {state!r}")
    target = FwState(state)
    allowed = _REASONS.get(target)
    if allowed is None and reason is not None:
        raise ValueError(f"a {target} report carries no reason")
    if allowed is not None and (not isinstance(reason, str) or reason not in allowed):
        raise ValueError(f"a {target} report needs a known reason, not {reason!r}")
    if progress is not None and (
        target is not FwState.DOWNLOADING
        or not isinstance(progress, int)
        or isinstance(progress, bool)
        or not 0 <= progress <= 100
    ):
        raise ValueError("progress is a whole percent, and only while downloading")
    return target


def plan_waves(spec: str, members: int) -> list[int]:
    """Cumulative device counts per wave for ``members`` devices; ``ValueError`` if bad.

    Each entry is a percentage of the group (``10%``, rounded up so no wave is empty)
    or an absolute cumulative count (``5``), non-decreasing. Waves that add nobody are
    dropped; devices past the last entry are not in the rollout.
    """
    parts = [p.strip() for p in spec.split(",")]
    if not parts or len(parts) > MAX_WAVES or any(not p for p in parts):
        raise ValueError(f"--waves takes 1 to {MAX_WAVES} comma-separated entries")
    out: list[int] = []
    for part in parts:
        if part.endswith("%"):
            number = part[:-1]
            if not number.isdigit() or not 0 < int(number) <= 100:
                raise ValueError(f"wave {part!r}: a percentage must be 1% to 100%")
            count = math.ceil(int(number) * members / 100)
        else:
            if not part.isdigit() or int(part) <= 0:
                raise ValueError(f"wave {part!r}: a count must be a positive integer")
            count = min(int(part), members)
        if out and count < out[-1]:
            raise ValueError("waves are cumulative and must not shrink")
        if count and (not out or count > out[-1]):
            out.append(count)
    if not out:
        raise ValueError("the group has no devices")
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """What the store does to a rollout after a report: new state and/or a wave to open."""

    state: RolloutState
    open_wave: int | None = None  # index of the wave whose devices get their offer now


def next_step(
    state: RolloutState,
    wave: int,
    waves: int,
    *,
    failures: int,
    max_failures: int,
    wave_done: bool,
    failed_now: bool,
) -> Step:
    """The rollout's move after a report (``failed_now``: it was a failure) or a resume.

    Auto-pause happens at the failure that takes the count past ``max_failures``,
    so a resumed rollout keeps running until the *next* failure.
    """
    if state is not RolloutState.ACTIVE:
        return Step(state)
    if failed_now and failures > max_failures:
        return Step(RolloutState.PAUSED)
    if not wave_done:
        return Step(state)
    if wave + 1 < waves:
        return Step(state, open_wave=wave + 1)
    return Step(RolloutState.COMPLETED)
