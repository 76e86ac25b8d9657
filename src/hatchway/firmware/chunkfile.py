"""A replica's file cache of one release's encrypted chunks (issue 9, delivery step 3).

The sealed chunks (``ChunkCipher.seal``: ``iv || ct || tag``) live in the store
(``firmware_chunks``); each replica copies them once into
``<data dir>/firmware/<release>.chunks``, each at a fixed offset,
``index * (64 KiB + 28)``, so serving chunk ``i`` is one bounded ``pread`` and never
reads the image. The file is written to a temporary name, ``fsync``-ed and renamed
into place (then the directory is ``fsync``-ed), so a crash, or two processes
filling it at once, leaves either no file or a whole one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from hatchway.firmware.manifest import CHUNK_SIZE

__all__ = [
    "SEAL_OVERHEAD",
    "check_sealed",
    "chunk_file_size",
    "chunk_path",
    "read_sealed",
    "sealed_span",
    "write_chunk_file",
]

SEAL_OVERHEAD = 12 + 16  # AES-GCM IV and tag
_SLOT = CHUNK_SIZE + SEAL_OVERHEAD
FIRMWARE_DIR = "firmware"


def chunk_path(data_dir: Path, release_id: str) -> Path:
    return Path(data_dir) / FIRMWARE_DIR / f"{release_id}.chunks"


def sealed_span(size: int, index: int) -> tuple[int, int]:
    """``(offset, length)`` of sealed chunk ``index`` of an image of ``size`` bytes."""
    plain = min(CHUNK_SIZE, size - index * CHUNK_SIZE)
    if index < 0 or plain <= 0:
        raise IndexError(index)
    return index * _SLOT, plain + SEAL_OVERHEAD


def chunk_file_size(size: int) -> int:
    """Bytes in the chunk file of an image of ``size`` bytes (the last chunk may be short)."""
    offset, length = sealed_span(size, (size - 1) // CHUNK_SIZE)
    return offset + length


def check_sealed(size: int, index: int, sealed: bytes) -> None:
    """``ValueError`` unless ``sealed`` has the length of sealed chunk ``index``."""
    try:
        expected = sealed_span(size, index)[1]
    except IndexError:
        raise ValueError(f"sealed chunk {index} lies past the end of its release") from None
    if len(sealed) != expected:
        raise ValueError(f"sealed chunk {index} has the wrong length for its release")


def write_chunk_file(
    path: Path,
    sealed: Iterable[bytes],
    size: int,
    random: Callable[[int], bytes],
) -> int:
    """Write the sealed chunks of an image of ``size`` bytes into ``path`` atomically.

    Returns the number of chunks; ``ValueError`` (and no file) if a chunk has the wrong
    length or the chunks do not cover the image.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{random(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    count = 0
    try:
        for index, data in enumerate(sealed):
            check_sealed(size, index, data)
            view, offset = memoryview(data), index * _SLOT
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            count += 1
        if count != -(-size // CHUNK_SIZE):
            raise ValueError(f"{count} sealed chunks do not cover the release")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return count


def read_sealed(path: Path, size: int, index: int) -> bytes:
    """One sealed chunk; ``IndexError`` outside the image, ``OSError`` if the file is short."""
    offset, length = sealed_span(size, index)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise OSError(f"{path} is shorter than its release")
    return data
