"""Per-chunk A256GCM with the index as AAD, and the content key wrapped to one device."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.firmware import (
    ChunkAssembler,
    ChunkCipher,
    ChunkRefused,
    InvalidManifest,
    MemoryImage,
    new_content_key,
    split_chunks,
    unwrap_content_key,
    wrap_content_key,
)
from hatchway.msgsec.keys import generate_decryption_key
from hatchway.runtime import SeededRandom
from tests.firmware.conftest import make_manifest


def _sealed(image: bytes) -> tuple[bytes, bytes, list[bytes]]:
    rnd = SeededRandom(b"cek")
    manifest = make_manifest(image)
    cek = new_content_key(rnd)
    cipher = ChunkCipher(cek, manifest.sha256)
    return cek, manifest.sha256, [cipher.seal(i, c, rnd) for i, c in enumerate(split_chunks(image))]


def test_encrypted_download_round_trip(image: bytes) -> None:
    cek, digest, sealed = _sealed(image)
    manifest = make_manifest(image)
    cipher = ChunkCipher(cek, digest)
    assembler = ChunkAssembler(manifest, MemoryImage(manifest.size))
    for i in reversed(range(len(sealed))):
        assembler.receive(i, cipher.open(i, sealed[i]))
    assembler.finish()
    assert assembler.verified


def test_reordered_chunks_are_refused_by_the_aad(image: bytes) -> None:
    cek, digest, sealed = _sealed(image)
    cipher = ChunkCipher(cek, digest)
    with pytest.raises(ChunkRefused) as info:
        cipher.open(1, sealed[2])
    assert info.value.index == 1 and "tag" in info.value.why


def test_chunk_moved_into_another_image_is_refused(image: bytes) -> None:
    cek, _, sealed = _sealed(image)
    with pytest.raises(ChunkRefused):
        ChunkCipher(cek, bytes(32)).open(0, sealed[0])


@pytest.mark.parametrize("mutate", ["flip", "truncate", "short"])
def test_tampered_ciphertext_is_refetch(image: bytes, mutate: str) -> None:
    cek, digest, sealed = _sealed(image)
    blob = bytearray(sealed[0])
    if mutate == "flip":
        blob[40] ^= 1
    elif mutate == "truncate":
        blob = blob[:-1]
    else:
        blob = blob[:20]
    with pytest.raises(ChunkRefused):
        ChunkCipher(cek, digest).open(0, bytes(blob))


@pytest.mark.parametrize("crv", ["P-256", "X25519"])
def test_content_key_wrap_round_trip(crv: str, image: bytes) -> None:
    device = generate_decryption_key(crv, random=SeededRandom(crv.encode()))
    cek, digest, _ = _sealed(image)
    token = wrap_content_key(cek, digest, device.public(), SeededRandom(b"wrap"))
    assert token.count(b".") == 4
    assert unwrap_content_key(token, device, digest) == cek


def test_wrapped_key_opens_only_for_its_device_and_its_image(image: bytes) -> None:
    device = generate_decryption_key("P-256", random=SeededRandom(b"dev-1"))
    other = generate_decryption_key("P-256", random=SeededRandom(b"dev-2"))
    cek, digest, _ = _sealed(image)
    token = wrap_content_key(cek, digest, device.public(), SeededRandom(b"wrap"))
    with pytest.raises(InvalidManifest):
        unwrap_content_key(token, other, digest)
    with pytest.raises(InvalidManifest):
        unwrap_content_key(token, device, bytes(32))
    head, *rest = token.split(b".")
    with pytest.raises(InvalidManifest):  # header is the AAD: changing it breaks the tag
        unwrap_content_key(b".".join([head[:-2] + b"AA", *rest]), device, digest)
    with pytest.raises(InvalidManifest):
        unwrap_content_key(b"x" * 5000, device, digest)


@settings(max_examples=50, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=0, max_size=64), min_size=2, max_size=8),
    data=st.data(),
)
def test_a_sealed_chunk_opens_only_at_its_own_index(
    chunks: list[bytes], data: st.DataObject
) -> None:
    cipher = ChunkCipher(bytes(32), bytes(range(32)))
    rnd = SeededRandom(b"prop")
    sealed = [cipher.seal(i, c, rnd) for i, c in enumerate(chunks)]
    i = data.draw(st.integers(0, len(chunks) - 1))
    j = data.draw(st.integers(0, len(chunks) - 1))
    if i == j:
        assert cipher.open(i, sealed[j]) == chunks[i]
    else:
        with pytest.raises(ChunkRefused):
            cipher.open(i, sealed[j])
