"""A replica's chunk file cache (issue 9): fixed offsets, atomic write, bounded reads,
and sealed chunks of the wrong length or count refused before anything is in place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.firmware import ChunkCipher, split_chunks
from hatchway.firmware.chunkfile import (
    chunk_file_size,
    chunk_path,
    read_sealed,
    sealed_span,
    write_chunk_file,
)
from hatchway.runtime import SeededRandom
from tests.firmware.conftest import image_bytes

KEY, SHA = bytes(range(32)), bytes(32)


def sealed(pieces: list[bytes]) -> list[bytes]:
    cipher, random = ChunkCipher(KEY, SHA), SeededRandom(b"x")
    return [cipher.seal(i, piece, random) for i, piece in enumerate(pieces)]


def test_chunks_round_trip_at_fixed_offsets(tmp_path: Path) -> None:
    image = image_bytes(2 * 65536 + 5)
    path = chunk_path(tmp_path, "r1")
    cipher = ChunkCipher(KEY, SHA)
    assert write_chunk_file(path, sealed(split_chunks(image)), len(image), SeededRandom(b"x")) == 3
    assert path.stat().st_size == chunk_file_size(len(image)) == 2 * (65536 + 28) + 5 + 28
    opened = [cipher.open(i, read_sealed(path, len(image), i)) for i in range(3)]
    assert b"".join(opened) == image
    assert sealed_span(len(image), 2) == (2 * (65536 + 28), 5 + 28)
    assert [p.name for p in path.parent.iterdir()] == ["r1.chunks"]  # no temporary left
    for index in (-1, 3):
        with pytest.raises(IndexError):
            sealed_span(len(image), index)


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def pieces() -> Iterator[bytes]:
        yield from sealed([b"a" * 65536])
        raise OSError("disk full")

    path = chunk_path(tmp_path, "r1")
    with pytest.raises(OSError, match="disk full"):
        write_chunk_file(path, pieces(), 65546, SeededRandom(b"x"))
    assert list(path.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        (sealed([b"a" * 65536]), "do not cover"),  # truncated: a chunk missing
        (sealed([b"a" * 65536, b"b" * 11]), "wrong length"),  # last chunk too long
        (sealed([b"a" * 65535, b"b" * 10]), "wrong length"),  # first chunk short
        (sealed([b"a" * 65536, b"b" * 10, b"c"]), "past the end"),  # one too many
        ([], "do not cover"),
    ],
)
def test_chunks_that_do_not_fit_the_release_leave_no_file(
    tmp_path: Path, chunks: list[bytes], why: str
) -> None:
    path = chunk_path(tmp_path, "r1")
    with pytest.raises(ValueError, match=why):
        write_chunk_file(path, chunks, 65546, SeededRandom(b"x"))
    assert list(path.parent.iterdir()) == []


def test_a_short_file_is_an_error_never_a_short_chunk(tmp_path: Path) -> None:
    path = chunk_path(tmp_path, "r1")
    write_chunk_file(path, sealed([b"a" * 65536, b"b" * 10]), 65546, SeededRandom(b"x"))
    with path.open("r+b") as fh:
        fh.truncate(65536 + 28 + 5)
    assert len(read_sealed(path, 65546, 0)) == 65536 + 28
    with pytest.raises(OSError, match="shorter"):
        read_sealed(path, 65546, 1)
