"""What a device does when the server revokes it (issue 9, fig. 7 from the operator's side).

The server's sealed ``DEREGISTERED`` notice (signed with its pinned key, addressed to
this device, fresh) is the last message a device acts on. It then:

1. overwrites its state file, and any temporary copy an interrupted write left
   beside it, in place with random bytes, flushes that to disk, and unlinks it;
2. writes a *tombstone* at the same path: no key, only who was revoked, why and when,
   so a later ``Device.load`` raises :class:`DeviceRevoked` instead of asking the
   operator to enrol, and a new enrolment may overwrite it;
3. raises :class:`DeviceRevoked`, and refuses every later call without sending.

Limits (docs/revocation.md): overwriting in place does not reach copies the storage
keeps elsewhere: journaling and copy-on-write file systems (ext4 data=journal, btrfs,
ZFS), flash wear levelling, snapshots and backups, nor the earlier versions of the
file that atomic rewrites (write a temporary file, rename over) left in free blocks.
Python cannot erase the key objects in memory either. Keys that must not outlive a
revocation belong in a secure element or on an encrypted volume whose key is dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from hatchway.errors import HatchwayError
from hatchway.pki.files import write_private

#: The tombstone's member in a ``hatchway-device-state/1`` file (docs/device-state.md).
REVOKED = "revoked"


class DeviceRevoked(HatchwayError):
    """The server revoked this device; its keys are deleted and it sends nothing more."""

    def __init__(self, device_id: str, reason: str, revoked_at: int) -> None:
        super().__init__(
            f"device {device_id} was revoked by the server ({reason}); its keys are deleted"
        )
        self.device_id = device_id
        self.reason = reason
        self.revoked_at = revoked_at

    @classmethod
    def from_tombstone(cls, data: dict[str, Any]) -> DeviceRevoked:
        info = data.get(REVOKED)
        if not isinstance(info, dict):
            raise ValueError("not a revoked device's tombstone")
        return cls(
            str(info.get("device_id", "")),
            str(info.get("reason", "")),
            int(info.get("revoked_at", 0)),
        )

    def tombstone(self, fmt: str, server_id: str, now: float) -> dict[str, Any]:
        return {
            "format": fmt,
            REVOKED: {
                "device_id": self.device_id,
                "server_id": server_id,
                "reason": self.reason,
                "revoked_at": self.revoked_at,
                "keys_deleted_at": int(now),
            },
        }


def wipe(path: Path) -> None:
    """Overwrite ``path`` (and stray temporary copies of it) in place, then unlink them."""
    strays = path.parent.glob(f".{path.name}.*.tmp")  # left by write_private on a crash
    for victim in [path, *strays]:
        _overwrite_and_unlink(victim)


def bury(path: Path, revoked: DeviceRevoked, *, fmt: str, server_id: str, now: float) -> None:
    """Wipe the state file at ``path`` and leave the keyless tombstone in its place."""
    wipe(path)
    tomb = revoked.tombstone(fmt, server_id, now)
    write_private(path, json.dumps(tomb, indent=2).encode())


def _overwrite_and_unlink(path: Path) -> None:
    flags = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError:
        # A symlink or something we may not write: never follow it; just unlink.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    try:
        size = os.fstat(fd).st_size
        written = 0
        while written < size:
            written += os.write(fd, secrets.token_bytes(min(65536, size - written)))
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
