"""Values and errors of the firmware store (issue 9): releases, rollouts, device state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hatchway.firmware.rollout import FwState, RolloutState
from hatchway.store.errors import StoreError

__all__ = [
    "DeviceFirmware",
    "ReleaseExists",
    "ReleaseRecord",
    "ReportOutcome",
    "ReportStatus",
    "RolloutExists",
    "RolloutRecord",
    "UnknownRelease",
]


class UnknownRelease(StoreError):
    """No published release (or no rollout of it) matches."""

    status_hint = 404


class ReleaseExists(StoreError):
    """A release of this class and version is already published."""

    status_hint = 409


class RolloutExists(StoreError):
    """The release already has an active or paused rollout."""

    status_hint = 409


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    release_id: str
    device_class: str
    version: str
    seq: int
    kid: str
    manifest: str  # the compact JWS, ASCII
    sha256: bytes
    size: int
    chunk_count: int
    content_key: bytes
    created_at: float

    def __repr__(self) -> str:  # never print the content key by accident
        return f"ReleaseRecord({self.release_id!r}, {self.device_class!r}, {self.version!r})"


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    rollout_id: str
    release_id: str
    group_name: str
    waves: tuple[int, ...]  # cumulative device counts
    wave: int  # index of the wave offered most recently
    max_failures: int
    confirm_within: int | None
    state: RolloutState
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DeviceFirmware:
    """One device's state for one release."""

    release_id: str
    device_id: str
    rollout_id: str
    wave: int
    state: FwState
    progress: int | None
    reason: str | None
    updated_at: float


class ReportStatus(StrEnum):
    """The ack status a device gets for a firmware report."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # the same final state again: nothing to change
    REFUSED = "refused"  # not in the transition table, or no offer of that release


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    status: ReportStatus
    detail: str = ""
    rollout_state: RolloutState | None = None
