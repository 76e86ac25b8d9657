"""Shared builders for firmware tests: keys from fixed seeds, images, signed manifests."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from hatchway.firmware import (
    Manifest,
    TrustStore,
    digest_image,
    generate_firmware_key,
    sign_manifest,
    split_chunks,
)
from hatchway.msgsec.keys import SigningKey
from hatchway.runtime import SeededRandom

NOW = 1_800_000_000  # a fixed instant; tests pass it in, nothing reads the clock
DAY = 86400


def fw_key(seed: bytes = b"fw-key-1") -> SigningKey:
    return generate_firmware_key(random=SeededRandom(seed))


def image_bytes(size: int, seed: bytes = b"image") -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def make_manifest(image: bytes, **over: Any) -> Manifest:
    size, sha, chunks = digest_image(split_chunks(image))
    fields: dict[str, Any] = {
        "sequence": 21,
        "device_class": "acme-meter-v2",
        "version": "2.1.0",
        "size": size,
        "sha256": sha,
        "chunks": chunks,
        "issued_at": NOW,
        "expires_at": NOW + 30 * DAY,
    }
    fields.update(over)
    return Manifest(**fields)


def signed(image: bytes, key: SigningKey | None = None, **over: Any) -> bytes:
    return sign_manifest(make_manifest(image, **over), key or fw_key())


@pytest.fixture
def key() -> SigningKey:
    return fw_key()


@pytest.fixture
def trust(key: SigningKey) -> TrustStore:
    return TrustStore.of(key.public(), now=NOW - DAY)


@pytest.fixture
def image() -> bytes:
    return image_bytes(3 * 65536 + 1234)
