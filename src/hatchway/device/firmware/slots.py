"""The A/B slot directory and the update record that survives a kill -9 (issue 9, "Install").

Next to the device state file ``meter-001.json`` lives ``meter-001.json.firmware/``::

    slot-a.img, slot-b.img   the two slots; the image downloads straight into the inactive one
    slots.json               which slot is active, the update in progress, unsent reports
    download.json            which chunks of the pending image are in place (DownloadState)

Every file is replaced atomically (``hatchway.pki.files``): a crash leaves the old or
the new record, never a torn one. ``slots.json`` changes only at phase boundaries;
``download.json`` after every chunk (after ``FileImage`` has fsynced the chunk), so
the record is never ahead of the data.

Phases of the pending update, one table (``TRANSITIONS``)::

    downloading -> verified -> installing -> booted -> confirmed
                   verified -> downloading   (the slot changed before install)

Leaving a phase to "no update pending" (refused, rolled back, or done) is allowed
from any phase; every other move is a ``LocalProtocolError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from hatchway import strictjson
from hatchway.device.firmware.offer import BadOffer, FirmwareOffer
from hatchway.errors import LocalProtocolError
from hatchway.firmware.chunks import DownloadState
from hatchway.pki.files import write_private

__all__ = ["TRANSITIONS", "Pending", "Phase", "SlotDir", "SlotRecord", "other_slot"]

RECORD_FORMAT = "hatchway-fw-slots/1"
SLOTS = ("a", "b")
MAX_RECORD_BYTES = 1 << 20
MAX_OUTBOX = 64
MAX_FAILED = 16


class Phase(StrEnum):
    DOWNLOADING = "downloading"
    VERIFIED = "verified"  # every chunk and the image digest checked in the slot
    INSTALLING = "installing"  # the installer's install step may have run (it must be idempotent)
    BOOTED = "booted"  # boot step started at ``booted_at``; confirm before the deadline
    CONFIRMED = "confirmed"  # health check passed: the commit point of the update


#: The one table of moves between phases (``None``: no update pending).
TRANSITIONS: Mapping[Phase | None, frozenset[Phase]] = {
    None: frozenset({Phase.DOWNLOADING}),
    Phase.DOWNLOADING: frozenset({Phase.DOWNLOADING, Phase.VERIFIED}),
    # Back to downloading when the slot no longer checks out right before install.
    Phase.VERIFIED: frozenset({Phase.INSTALLING, Phase.DOWNLOADING}),
    Phase.INSTALLING: frozenset({Phase.BOOTED}),
    Phase.BOOTED: frozenset({Phase.CONFIRMED}),
    Phase.CONFIRMED: frozenset(),
}


def other_slot(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


@dataclass(frozen=True, slots=True)
class Pending:
    """The update in progress."""

    offer: FirmwareOffer
    slot: str  # the inactive slot it goes to
    phase: Phase
    booted_at: int | None = None
    progress: int = 0  # last reported progress, whole percent

    @property
    def deadline(self) -> int | None:
        return None if self.booted_at is None else self.booted_at + self.offer.confirm_within

    def to_json(self) -> dict[str, Any]:
        return {
            "offer": self.offer.to_json(),
            "slot": self.slot,
            "phase": self.phase.value,
            "booted_at": self.booted_at,
            "progress": self.progress,
        }

    @classmethod
    def from_json(cls, data: object) -> Pending:
        if not isinstance(data, dict) or set(data) != {
            "offer",
            "slot",
            "phase",
            "booted_at",
            "progress",
        }:
            raise ValueError("pending update: wrong members")
        offer = data["offer"]
        if not isinstance(offer, dict) or set(offer) != {
            "release",
            "manifest",
            "key",
            "chunks",
            "confirm_within",
        }:
            raise ValueError("pending update: wrong offer members")
        try:
            parsed = FirmwareOffer.from_body(offer)
        except BadOffer as exc:
            raise ValueError(f"pending update: {exc}") from None
        slot, booted, progress = data["slot"], data["booted_at"], data["progress"]
        if slot not in SLOTS:
            raise ValueError("pending update: slot is a or b")
        if booted is not None and (type(booted) is not int or booted < 0):
            raise ValueError("pending update: booted_at must be a non-negative integer")
        if type(progress) is not int or not 0 <= progress <= 100:
            raise ValueError("pending update: progress must be 0..100")
        if not isinstance(data["phase"], str):
            raise ValueError("pending update: phase must be a string")
        phase = Phase(data["phase"])
        if (booted is None) != (phase in (Phase.DOWNLOADING, Phase.VERIFIED, Phase.INSTALLING)):
            raise ValueError("pending update: booted_at is set exactly once booted")
        return cls(parsed, slot, phase, booted, progress)


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """``slots.json``: the active slot, the pending update, reports not yet delivered."""

    active: str = "a"
    pending: Pending | None = None
    outbox: tuple[dict[str, Any], ...] = ()
    #: (sequence, image sha256 hex, reason) of images that were rolled back: offered
    #: again, they are reported again rather than installed again.
    failed: tuple[tuple[int, str, str], ...] = ()

    def move(self, pending: Pending | None) -> SlotRecord:
        """The record with ``pending`` replacing the current update, checked against the table."""
        if pending is not None:
            current = None if self.pending is None else self.pending.phase
            if current is not None and self.pending is not None:
                same = self.pending.offer.release == pending.offer.release
                # A download may be replaced by a newer offer's download.
                if not same and pending.phase is not Phase.DOWNLOADING:
                    raise LocalProtocolError("a pending update changed its release mid-way")
            if pending.phase not in TRANSITIONS[current] and pending.phase is not current:
                raise LocalProtocolError(f"no move from {current} to {pending.phase}")
        return replace(self, pending=pending)

    def with_report(self, report: dict[str, Any]) -> SlotRecord:
        return replace(self, outbox=(*self.outbox, report)[-MAX_OUTBOX:])

    def with_failure(self, sequence: int, sha256_hex: str, reason: str) -> SlotRecord:
        return replace(self, failed=(*self.failed, (sequence, sha256_hex, reason))[-MAX_FAILED:])

    def failure_of(self, sequence: int, sha256_hex: str) -> str | None:
        for seq, sha, reason in self.failed:
            if (seq, sha) == (sequence, sha256_hex):
                return reason
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "active": self.active,
            "pending": None if self.pending is None else self.pending.to_json(),
            "outbox": list(self.outbox),
            "failed": [list(f) for f in self.failed],
        }

    @classmethod
    def from_json(cls, data: object) -> SlotRecord:
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not a {RECORD_FORMAT} record")
        if set(data) != {"format", "active", "pending", "outbox", "failed"}:
            raise ValueError("slot record: wrong members")
        active, outbox, failed = data["active"], data["outbox"], data["failed"]
        if active not in SLOTS:
            raise ValueError("slot record: active is a or b")
        if not isinstance(outbox, list) or len(outbox) > MAX_OUTBOX:
            raise ValueError("slot record: outbox must be a short list")
        if not all(isinstance(r, dict) for r in outbox):
            raise ValueError("slot record: outbox entries are objects")
        if not isinstance(failed, list) or len(failed) > MAX_FAILED:
            raise ValueError("slot record: failed must be a short list")
        entries: list[tuple[int, str, str]] = []
        for entry in failed:
            ok = isinstance(entry, list) and len(entry) == 3
            ok = ok and type(entry[0]) is int and all(isinstance(v, str) for v in entry[1:])
            if not ok:
                raise ValueError("slot record: failed entries are [seq, sha256, reason]")
            entries.append((entry[0], entry[1], entry[2]))
        pending = None if data["pending"] is None else Pending.from_json(data["pending"])
        if pending is not None and pending.slot == active:
            raise ValueError("slot record: the pending update targets the active slot")
        return cls(active, pending, tuple(outbox), tuple(entries))


@dataclass
class SlotDir:
    """The directory of slots and records next to a device state file."""

    path: Path

    @classmethod
    def for_state(cls, state_path: Path) -> SlotDir:
        return cls(state_path.with_name(state_path.name + ".firmware"))

    def __post_init__(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def slot_path(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise ValueError("slot is a or b")
        return self.path / f"slot-{slot}.img"

    @property
    def _record_path(self) -> Path:
        return self.path / "slots.json"

    @property
    def _download_path(self) -> Path:
        return self.path / "download.json"

    def load(self) -> SlotRecord:
        """The record on disk; a damaged one is an error (it decides which slot boots)."""
        raw = _read_bounded(self._record_path)
        if raw is None:
            return SlotRecord()
        try:
            return SlotRecord.from_json(strictjson.loads(raw))
        except (strictjson.JsonError, ValueError) as exc:
            raise LocalProtocolError(f"{self._record_path} is damaged: {exc}") from None

    def save(self, record: SlotRecord) -> None:
        write_private(self._record_path, _dump(record.to_json()))

    def load_download(self) -> DownloadState | None:
        """The saved download state; a damaged one is dropped (the chunks are fetched again)."""
        raw = _read_bounded(self._download_path)
        if raw is None:
            return None
        try:
            value = strictjson.loads(raw)
            return DownloadState.from_json(value) if isinstance(value, dict) else None
        except (strictjson.JsonError, ValueError):
            return None

    def save_download(self, state: DownloadState) -> None:
        write_private(self._download_path, _dump(state.to_json()))

    def clear_download(self) -> None:
        self._download_path.unlink(missing_ok=True)


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _read_bounded(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:
        raise LocalProtocolError(f"{path} is larger than {MAX_RECORD_BYTES} bytes")
    return raw
