"""Known-answer data: tests/vectors/firmware/manifest-kat.json (fixed key, fixed manifest).

Ed25519 signatures are deterministic (RFC 8032 §5.1.6), so re-signing the expected
claims must give the stored manifest byte for byte: this pins the header, the claim
serialisation and the signature, and any change to them is a format change.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from hatchway.firmware import (
    CHUNK_SIZE,
    ChunkAssembler,
    ChunkCipher,
    DevicePosition,
    Manifest,
    MemoryImage,
    TrustStore,
    check_manifest,
    load_private_jwk,
    load_public_jwk,
    sign_manifest,
    split_chunks,
    unwrap_content_key,
)
from hatchway.msgsec.keys import DecryptionKey
from hatchway.runtime import SeededRandom

KAT = Path(__file__).resolve().parents[1] / "vectors" / "firmware" / "manifest-kat.json"


@pytest.fixture(scope="module")
def kat() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(KAT.read_text())
    return data


def _image(kat: dict[str, Any]) -> bytes:
    return bytes(i % 251 for i in range(kat["image_size"]))


def _segment(token: str, n: int) -> Any:
    part = token.split(".")[n]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_kat_manifest_decodes_to_the_expected_header_and_claims(kat: dict[str, Any]) -> None:
    trust = TrustStore.of(load_public_jwk(kat["public_jwk"]))
    position = DevicePosition("acme-meter-v2", sequence=20, version="2.0.0")
    manifest = check_manifest(kat["manifest"], trust=trust, position=position, now=1767225600)
    assert _segment(kat["manifest"], 0) == kat["expected_header"]
    assert manifest.to_claims() == kat["expected_claims"]
    assert manifest.sha256.hex() == kat["image_sha256_hex"]
    assert manifest.sha256 == hashlib.sha256(_image(kat)).digest()


def test_kat_manifest_is_reproduced_byte_for_byte(kat: dict[str, Any]) -> None:
    key = load_private_jwk(kat["private_jwk"])
    manifest = Manifest.from_claims(kat["expected_claims"])
    assert sign_manifest(manifest, key).decode() == kat["manifest"]


def test_kat_content_key_unwraps_and_decrypts_the_image(kat: dict[str, Any]) -> None:
    image = _image(kat)
    digest = bytes.fromhex(kat["image_sha256_hex"])
    device = DecryptionKey.from_jwk(kat["device_private_jwk"])
    cek = unwrap_content_key(kat["wrapped_content_key"], device, digest)
    assert cek.hex() == kat["content_key_hex"]
    cipher = ChunkCipher(cek, digest)
    sealed0 = cipher.seal(0, image[:CHUNK_SIZE], SeededRandom(b"kat-chunk"))
    assert hashlib.sha256(sealed0).hexdigest() == kat["chunk0_sealed_sha256_hex"]
    manifest = Manifest.from_claims(kat["expected_claims"])
    assembler = ChunkAssembler(manifest, MemoryImage(manifest.size))
    rnd = SeededRandom(b"kat-chunk")
    for i, chunk in enumerate(split_chunks(image)):
        assembler.receive(i, cipher.open(i, cipher.seal(i, chunk, rnd)))
    assembler.finish()
    assert assembler.verified
