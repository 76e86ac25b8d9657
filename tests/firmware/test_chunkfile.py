"""The server's chunk file (issue 9): fixed offsets, atomic write, bounded reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.firmware import ChunkCipher, split_chunks
from hatchway.firmware.chunkfile import chunk_path, read_sealed, sealed_span, write_chunk_file
from hatchway.runtime import SeededRandom
from tests.firmware.conftest import image_bytes

KEY, SHA = bytes(range(32)), bytes(32)


def test_chunks_round_trip_at_fixed_offsets(tmp_path: Path) -> None:
    image = image_bytes(2 * 65536 + 5)
    path = chunk_path(tmp_path, "r1")
    cipher = ChunkCipher(KEY, SHA)
    assert write_chunk_file(path, split_chunks(image), cipher, SeededRandom(b"x")) == 3
    opened = [cipher.open(i, read_sealed(path, len(image), i)) for i in range(3)]
    assert b"".join(opened) == image
    assert sealed_span(len(image), 2) == (2 * (65536 + 28), 5 + 28)
    assert [p.name for p in path.parent.iterdir()] == ["r1.chunks"]  # no temporary left
    for index in (-1, 3):
        with pytest.raises(IndexError):
            sealed_span(len(image), index)


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def pieces() -> Iterator[bytes]:
        yield b"a" * 65536
        raise OSError("disk full")

    path = chunk_path(tmp_path, "r1")
    with pytest.raises(OSError, match="disk full"):
        write_chunk_file(path, pieces(), ChunkCipher(KEY, SHA), SeededRandom(b"x"))
    assert list(path.parent.iterdir()) == []


def test_a_short_file_is_an_error_never_a_short_chunk(tmp_path: Path) -> None:
    path = chunk_path(tmp_path, "r1")
    write_chunk_file(path, [b"a" * 65536, b"b" * 10], ChunkCipher(KEY, SHA), SeededRandom(b"x"))
    with path.open("r+b") as fh:
        fh.truncate(65536 + 28 + 5)
    assert len(read_sealed(path, 65546, 0)) == 65536 + 28
    with pytest.raises(OSError, match="shorter"):
        read_sealed(path, 65546, 1)
