"""The device's persistent state: one JSON file, mode 0600, written atomically.

Format ``hatchway-device-state/1`` (documented in docs/device-state.md)::

    device_id, server_id            who we are and who the server is
    signing_key, encryption_key     our private JWKs (with kid)
    suite                           the algorithms pinned for us at enrolment
    server_keys                     the server's public JWK set
    endpoints                       {"messages": "http://.../m"}
    device_certificate, ca_certificate   PEM
    seq: {"next", "reserved"}       outbound sequence numbers
    inbound: {"highest", "bitmap"}  replay window over the server's sequence numbers
    firmware (optional)             class, installed version/sequence, firmware trust

Sequence numbers are reserved in blocks: before ``next`` may reach ``reserved`` the
file is rewritten with a higher ``reserved``. After a crash the device resumes from
``reserved``, skipping at most one block, so a number is never used twice.

A revoked device's file is a *tombstone* (``"revoked": {...}``, no keys;
:mod:`hatchway.device.revoked`): loading it raises ``DeviceRevoked``.

Before enrolment sends anything, the same file holds a *pending enrolment*
(``"enrolment": "pending"``): the device id, the server and the freshly made private
keys (``PendingEnrolment``). So the keys exist on disk before the server can tie them
to the device, and an interrupted enrolment resumes with them instead of losing them.
"""

from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from hatchway.device.revoked import REVOKED, DeviceRevoked
from hatchway.errors import ConfigurationError
from hatchway.pki.files import write_private

FORMAT = "hatchway-device-state/1"
SEQ_BLOCK = 32
#: The ``enrolment`` member of a state file whose enrolment has not completed.
PENDING = "pending"


@dataclass(frozen=True, slots=True)
class DeviceState:
    device_id: str
    server_id: str
    signing_key: dict[str, Any]
    encryption_key: dict[str, Any]
    suite: dict[str, str]
    server_keys: dict[str, Any]
    endpoints: dict[str, str]
    device_certificate: str = ""
    ca_certificate: str = ""
    seq_next: int = 0
    seq_reserved: int = 0
    inbound_highest: int = -1
    inbound_bitmap: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: The device's firmware position and trust (``hatchway.device.firmware.identity``);
    #: empty for a state file written before issue 9.
    firmware: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "device_id": self.device_id,
            "server_id": self.server_id,
            "signing_key": self.signing_key,
            "encryption_key": self.encryption_key,
            "suite": self.suite,
            "server_keys": self.server_keys,
            "endpoints": self.endpoints,
            "device_certificate": self.device_certificate,
            "ca_certificate": self.ca_certificate,
            "seq": {"next": self.seq_next, "reserved": self.seq_reserved},
            "inbound": {
                "highest": self.inbound_highest,
                "bitmap": format(self.inbound_bitmap, "x"),
            },
            **({"extra": self.extra} if self.extra else {}),
            **({"firmware": self.firmware} if self.firmware else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceState:
        if data.get("format") != FORMAT:
            raise ConfigurationError(f"not a {FORMAT} file (format={data.get('format')!r})")
        if REVOKED in data:  # a tombstone: the server revoked us and the keys are gone
            raise DeviceRevoked.from_tombstone(data)
        if data.get("enrolment") == PENDING:
            raise ConfigurationError(
                f"the enrolment of device {data.get('device_id')!r} did not complete; run "
                "'hatchway device enroll' again with this state file (it resumes with its keys)"
            )
        reserved = int(data["seq"]["reserved"])
        return cls(
            device_id=str(data["device_id"]),
            server_id=str(data["server_id"]),
            signing_key=dict(data["signing_key"]),
            encryption_key=dict(data["encryption_key"]),
            suite=dict(data["suite"]),
            server_keys=dict(data["server_keys"]),
            endpoints=dict(data["endpoints"]),
            device_certificate=str(data.get("device_certificate", "")),
            ca_certificate=str(data.get("ca_certificate", "")),
            # Resume past everything that may have been used before a crash.
            seq_next=reserved,
            seq_reserved=reserved,
            inbound_highest=int(data["inbound"]["highest"]),
            inbound_bitmap=int(data["inbound"]["bitmap"], 16),
            extra=dict(data.get("extra", {})),
            firmware=dict(data.get("firmware", {})),
        )


@dataclass(frozen=True, slots=True)
class PendingEnrolment:
    """The keys of an enrolment that has not completed, saved before anything is sent."""

    device_id: str
    server: str
    signing_key: dict[str, Any]
    encryption_key: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "enrolment": PENDING,
            "device_id": self.device_id,
            "server": self.server,
            "signing_key": self.signing_key,
            "encryption_key": self.encryption_key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingEnrolment:
        if data.get("format") != FORMAT or data.get("enrolment") != PENDING:
            raise ValueError("not a pending enrolment")
        return cls(
            device_id=str(data["device_id"]),
            server=str(data["server"]),
            signing_key=dict(data["signing_key"]),
            encryption_key=dict(data["encryption_key"]),
        )

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_json(), indent=2).encode())


class StateFile:
    """Loads and saves a ``DeviceState``; hands out sequence numbers crash-safely.

    While open it holds an exclusive lock on ``<path>.lock``: two processes sharing
    one state file would each reserve the same sequence numbers, and the later one's
    messages would be refused as replays.
    """

    def __init__(self, path: Path, state: DeviceState, *, lock: IO[str] | None = None) -> None:
        """Open ``path`` for ``state``, taking its lock (or adopting ``lock``, as enrolment
        does: it holds the lock from before the first request until the state is saved)."""
        self.path = path
        self.state = state
        self._lock = lock if lock is not None else acquire_lock(path)
        # A StateFile dropped without close() still releases its lock when collected.
        self._release = weakref.finalize(self, _close_quietly, self._lock)

    def close(self) -> None:
        self._release()  # closing the descriptor releases the flock; idempotent

    @classmethod
    def load(cls, path: Path) -> StateFile:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls(path, DeviceState.from_json(data))
        except FileNotFoundError:
            raise ConfigurationError(f"no device state at {path}; enrol first") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path} is not a valid device state file: {exc}") from None

    def save(self) -> None:
        write_private(self.path, json.dumps(self.state.to_json(), indent=2).encode())

    def next_seq(self) -> int:
        state = self.state
        if state.seq_next >= state.seq_reserved:
            # Write the reservation to disk *before* using any number in it.
            self.state = replace(state, seq_reserved=state.seq_next + SEQ_BLOCK)
            self.save()
        seq = self.state.seq_next
        self.state = replace(self.state, seq_next=seq + 1)
        return seq

    def update(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)


def _close_quietly(handle: IO[str] | None) -> None:
    if handle is not None:
        handle.close()


def release_lock(handle: IO[str] | None) -> None:
    """Release a lock taken by :func:`acquire_lock` (idempotent)."""
    _close_quietly(handle)


def acquire_lock(path: Path) -> IO[str] | None:
    """Take the exclusive lock of the state file ``path`` (``<path>.lock``), or refuse.

    Also checks that ``path`` can be a state file at all, so that enrolment can refuse a
    bad ``--state`` before it sends anything.
    """
    if not path.parent.is_dir():
        raise ConfigurationError(
            f"cannot use {path} as the device state file: the directory {path.parent} "
            "does not exist; create it first"
        )
    if path.is_dir():
        raise ConfigurationError(f"cannot use {path} as the device state file: it is a directory")
    if fcntl is None:  # pragma: no cover - no flock on this platform; single process assumed
        return None
    lock_path = path.with_name(path.name + ".lock")
    handle = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigurationError(
            f"{path} is in use by another process; one device state file serves one process"
        ) from None
    return handle
