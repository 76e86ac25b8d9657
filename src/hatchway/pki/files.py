"""Atomic, permission-correct writes for key material and public artefacts.

The data dir holds the dev CA key, the TLS key and the device state file. A crash
or a full disk in the middle of a write must never leave a truncated key behind,
and a private key must never be readable by others, not even for an instant. So
every write goes to a temporary file in the same directory (so ``os.replace`` is a
rename within one file system, which POSIX makes atomic), is flushed with
``fsync``, and only then replaces the target. Private files are created with mode
0600 by ``os.open`` itself rather than ``chmod``-ed afterwards, which would leave a
window in which the umask decides who can read the key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by the owner only."""
    _write_atomic(Path(path), data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, world-readable (0644)."""
    _write_atomic(Path(path), data, PUBLIC_MODE)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    directory = path.parent
    # A random suffix plus O_EXCL means two writers never share a temp file and
    # a symlink planted at the temp name is refused rather than followed.
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        try:
            # The umask may have cleared bits from ``mode`` (it can only remove
            # permissions, never add them), so set the exact mode on the open fd.
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; without this a crash can undo ``os.replace``."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
