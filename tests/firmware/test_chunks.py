"""Chunked download: checked on arrival, never written when bad, resumable (issue 9, step 3)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.errors import LocalProtocolError
from hatchway.firmware import (
    CHUNK_SIZE,
    ChunkAssembler,
    ChunkRefused,
    DownloadState,
    ManifestRefused,
    MemoryImage,
    RefusalReason,
    split_chunks,
)
from hatchway.firmware.files import FileImage
from tests.firmware.conftest import image_bytes, make_manifest


def _assemble(image: bytes) -> tuple[ChunkAssembler, MemoryImage, list[bytes]]:
    manifest = make_manifest(image)
    store = MemoryImage(manifest.size)
    return ChunkAssembler(manifest, store), store, split_chunks(image)


def test_in_order_download_yields_the_exact_image(image: bytes) -> None:
    assembler, store, chunks = _assemble(image)
    for i, chunk in enumerate(chunks):
        assert assembler.receive(i, chunk) is True
    assembler.finish()
    assert assembler.verified and bytes(store.data) == image


def test_tampered_chunk_is_refetch_and_never_written(image: bytes) -> None:
    assembler, store, chunks = _assemble(image)
    bad = bytearray(chunks[1])
    bad[100] ^= 1
    with pytest.raises(ChunkRefused) as info:
        assembler.receive(1, bytes(bad))
    assert info.value.index == 1
    assert store.data[CHUNK_SIZE : 2 * CHUNK_SIZE] == bytes(CHUNK_SIZE)  # nothing written
    assert assembler.missing() == [0, 1, 2, 3]
    assembler.receive(1, chunks[1])  # the refetched chunk is fine
    assert 1 not in assembler.missing()


@pytest.mark.parametrize(("index", "why"), [(-1, "index"), (4, "index"), (0, "length")])
def test_chunk_outside_the_manifest_or_of_wrong_length(image: bytes, index: int, why: str) -> None:
    assembler, store, chunks = _assemble(image)
    with pytest.raises(ChunkRefused, match="fetched again") as info:
        assembler.receive(index, chunks[0][:-1] if why == "length" else chunks[0])
    assert why in info.value.why
    assert not any(store.data)


def test_a_chunk_sent_at_another_index_is_refused(image: bytes) -> None:
    assembler, _, chunks = _assemble(image)
    with pytest.raises(ChunkRefused):
        assembler.receive(1, chunks[2])


def test_duplicate_chunk_is_not_rewritten(image: bytes) -> None:
    assembler, _, chunks = _assemble(image)
    assert assembler.receive(0, chunks[0]) is True
    assert assembler.receive(0, chunks[0]) is False


def test_finish_with_missing_chunks_is_this_sides_error(image: bytes) -> None:
    assembler, _, chunks = _assemble(image)
    assembler.receive(0, chunks[0])
    with pytest.raises(LocalProtocolError, match="3 chunks still missing"):
        assembler.finish()


def test_storage_corrupted_after_write_goes_back_to_missing(image: bytes) -> None:
    assembler, store, chunks = _assemble(image)
    for i, chunk in enumerate(chunks):
        assembler.receive(i, chunk)
    store.data[2 * CHUNK_SIZE + 7] ^= 0x80  # a flipped bit in the slot
    with pytest.raises(ChunkRefused) as info:
        assembler.finish()
    assert info.value.index == 2 and assembler.missing() == [2] and not assembler.verified
    assembler.receive(2, chunks[2])
    assembler.finish()
    assert bytes(store.data) == image


def test_a_state_file_ahead_of_the_data_is_caught_by_finish(image: bytes) -> None:
    """A crash between marking and writing (or a forged state) cannot yield a bad image."""
    manifest = make_manifest(image)
    lying = DownloadState(manifest.sequence, manifest.sha256, bytes([0b1111]))
    store = MemoryImage(manifest.size)  # nothing was ever written
    assembler = ChunkAssembler(manifest, store, lying)
    assert assembler.missing() == []
    with pytest.raises(ChunkRefused):
        assembler.finish()
    assert assembler.missing() == [0, 1, 2, 3] and not assembler.verified
    for i, chunk in enumerate(split_chunks(image)):
        assembler.receive(i, chunk)
    assembler.finish()
    assert bytes(store.data) == image


def test_verified_is_never_taken_from_a_state_file(image: bytes) -> None:
    manifest = make_manifest(image)
    forged = DownloadState(manifest.sequence, manifest.sha256, bytes([0b1111]), verified=True)
    assembler = ChunkAssembler(manifest, MemoryImage(manifest.size), forged)
    assert not assembler.verified
    with pytest.raises(ChunkRefused):
        assembler.finish()
    assert not assembler.verified


def test_chunk_list_that_disagrees_with_the_digest_is_digest_mismatch(image: bytes) -> None:
    """Every chunk matches the signed list, yet the image digest differs: refuse, do not install."""
    manifest = make_manifest(image, sha256=bytes(32))
    assembler = ChunkAssembler(manifest, MemoryImage(manifest.size))
    for i, chunk in enumerate(split_chunks(image)):
        assembler.receive(i, chunk)
    with pytest.raises(ManifestRefused) as info:
        assembler.finish()
    assert info.value.reason is RefusalReason.DIGEST_MISMATCH and not assembler.verified


def test_resume_from_a_file_after_a_restart(tmp_path: object, image: bytes) -> None:
    """A new process reopens the slot and the persisted state: only missing chunks are fetched."""
    from pathlib import Path

    slot, state_file = Path(str(tmp_path)) / "slot.bin", Path(str(tmp_path)) / "state.json"
    manifest = make_manifest(image)
    chunks = split_chunks(image)
    with FileImage(slot, manifest.size) as store:
        first = ChunkAssembler(manifest, store)
        first.receive(3, chunks[3])
        first.receive(0, chunks[0])
        state_file.write_text(json.dumps(first.state.to_json()))
    # "Restart": nothing survives but the two files.
    state = DownloadState.from_json(json.loads(state_file.read_text()))
    with FileImage(slot, manifest.size) as store:
        second = ChunkAssembler(manifest, store, state)
        assert second.missing() == [1, 2]
        for i in second.missing():
            second.receive(i, chunks[i])
        second.finish()
    assert slot.read_bytes() == image


def test_state_for_another_manifest_is_discarded(image: bytes) -> None:
    old = ChunkAssembler(make_manifest(image), MemoryImage(len(image)))
    old.receive(0, split_chunks(image)[0])
    newer = make_manifest(image, sequence=22)
    assert ChunkAssembler(newer, MemoryImage(len(image)), old.state).missing() == [0, 1, 2, 3]


def test_state_with_bits_past_the_last_chunk_is_discarded(image: bytes) -> None:
    manifest = make_manifest(image)
    forged = DownloadState(manifest.sequence, manifest.sha256, b"\xff")  # claims 8 chunks
    assert ChunkAssembler(manifest, MemoryImage(len(image)), forged).missing() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {
            "format": "hatchway-fw-download/1",
            "seq": "1",
            "sha256": "",
            "have": "",
            "verified": False,
        },
        {
            "format": "hatchway-fw-download/1",
            "seq": 1,
            "sha256": "A=",
            "have": "",
            "verified": False,
        },
        {"format": "hatchway-fw-download/1", "seq": 1, "sha256": 5, "have": "", "verified": False},
    ],
)
def test_malformed_state_file_is_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="state"):
        DownloadState.from_json(raw)


# --- properties ----------------------------------------------------------------

_SIZES = st.integers(min_value=1, max_value=5 * CHUNK_SIZE)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=_SIZES, data=st.data())
def test_any_arrival_order_corruption_and_resume_yields_the_exact_image(
    size: int, data: st.DataObject
) -> None:
    """Random order, duplicates, corrupted and misplaced chunks, and a resume at any point:
    the result is exactly the image, and a bad chunk is never in the store."""
    image = image_bytes(size, seed=size.to_bytes(4, "big"))
    manifest = make_manifest(image)
    chunks = split_chunks(image)
    store = MemoryImage(manifest.size)
    assembler = ChunkAssembler(manifest, store)
    n = len(chunks)
    events = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.sampled_from(["good", "flip", "shift", "resume"]),
            ),
            max_size=3 * n + 3,
        )
    )
    for index, what in events:
        if what == "resume":
            saved = json.loads(json.dumps(assembler.state.to_json()))
            assembler = ChunkAssembler(manifest, store, DownloadState.from_json(saved))
        elif what == "good":
            assembler.receive(index, chunks[index])
        else:
            bad = bytearray(chunks[index])
            if what == "flip":
                bad[data.draw(st.integers(0, len(bad) - 1))] ^= 1 << data.draw(st.integers(0, 7))
            else:
                bad = bytearray(chunks[(index + 1) % n]) if n > 1 else bad + b"\0"
            if bytes(bad) == chunks[index]:
                continue
            before = bytes(store.data)
            with pytest.raises(ChunkRefused):
                assembler.receive(index, bytes(bad))
            assert bytes(store.data) == before
        # Invariant: every chunk marked present is the right one, in place.
        for i in range(n):
            if assembler.state.has(i):
                start = i * CHUNK_SIZE
                assert bytes(store.data[start : start + len(chunks[i])]) == chunks[i]
    for index in assembler.missing():
        assembler.receive(index, chunks[index])
    assembler.finish()
    assert bytes(store.data) == image


@settings(max_examples=60, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(["format", "seq", "sha256", "have", "verified", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=60)),
    )
)
def test_state_parser_accepts_or_raises_value_error_only(raw: dict[str, object]) -> None:
    raw.setdefault("format", "hatchway-fw-download/1")
    try:
        state = DownloadState.from_json(raw)
    except ValueError:
        return
    assert DownloadState.from_json(state.to_json()) == state
