"""Key rotation (learned from a manifest signed by the old key) and the trust store."""

from __future__ import annotations

import pytest

from hatchway.firmware import (
    DevicePosition,
    KeyStatus,
    ManifestRefused,
    RefusalReason,
    Rotation,
    TrustStore,
    check_manifest,
    load_private_jwk,
    load_public_jwk,
    rotation_proof,
    sign_manifest,
    trust_after,
)
from hatchway.msgsec.algorithms import SignAlg
from hatchway.msgsec.keys import SigningKey, generate_signing_key
from tests.firmware.conftest import DAY, NOW, fw_key, make_manifest

POSITION = DevicePosition("acme-meter-v2", sequence=20, version="2.0.0")


def _rotating(image: bytes, old: SigningKey, new: SigningKey, seq: int = 21) -> bytes:
    rotation = Rotation(new.public(), NOW + 7 * DAY, rotation_proof(new, old.kid, seq))
    return sign_manifest(make_manifest(image, sequence=seq, rotation=rotation), old)


def test_device_learns_the_new_key_and_the_old_one_retires_after_the_overlap(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    new = fw_key(b"fw-key-2")
    manifest = check_manifest(
        _rotating(image, key, new), trust=trust, position=POSITION, now=NOW + 60
    )
    learned = trust_after(trust, manifest, NOW + 60)
    entry = learned.get(key.kid)
    assert entry is not None and entry.status is KeyStatus.RETIRED
    assert entry.not_after == NOW + 7 * DAY
    installed = DevicePosition("acme-meter-v2", 21, "2.1.0")
    later = sign_manifest(make_manifest(image, sequence=22), new)
    check_manifest(later, trust=learned, position=installed, now=NOW + 120)
    # The old key still works in the overlap, not after it.
    by_old = sign_manifest(make_manifest(image, sequence=22), key)
    check_manifest(by_old, trust=learned, position=installed, now=NOW + 7 * DAY - 1)
    with pytest.raises(ManifestRefused) as info:
        check_manifest(by_old, trust=learned, position=installed, now=NOW + 7 * DAY)
    assert info.value.reason is RefusalReason.RETIRED_KEY


def test_rotation_without_the_new_keys_consent_is_refused(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    new, stranger = fw_key(b"fw-key-2"), fw_key(b"stranger")
    cases = [
        rotation_proof(stranger, key.kid, 21),  # signed by someone else
        rotation_proof(new, "another-kid", 21),  # for another old key
        rotation_proof(new, key.kid, 20),  # for another manifest
        "not-a-jws",
    ]
    for proof in cases:
        rotation = Rotation(new.public(), NOW + DAY, proof)
        token = sign_manifest(make_manifest(image, rotation=rotation), key)
        with pytest.raises(ManifestRefused) as info:
            check_manifest(token, trust=trust, position=POSITION, now=NOW + 60)
        assert info.value.reason is RefusalReason.BAD_ROTATION


def test_rotation_to_a_key_the_device_has_revoked_is_refused(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    new = fw_key(b"fw-key-2")
    revoked_new = trust.add(new.public(), NOW).revoke(new.kid, NOW, "leaked")
    with pytest.raises(ManifestRefused) as info:
        check_manifest(
            _rotating(image, key, new), trust=revoked_new, position=POSITION, now=NOW + 60
        )
    assert info.value.reason is RefusalReason.BAD_ROTATION


def test_rotation_cannot_extend_a_retired_keys_overlap(trust: TrustStore, key: SigningKey) -> None:
    new = fw_key(b"fw-key-2")
    retired = trust.retire(key.kid, NOW + DAY)
    rotated = retired.rotate(key.kid, new.public(), NOW, NOW + 30 * DAY)
    entry = rotated.get(key.kid)
    assert entry is not None and entry.not_after == NOW + DAY


def test_revoked_key_stays_revoked(trust: TrustStore, key: SigningKey) -> None:
    revoked = trust.revoke(key.kid, NOW, "stolen")
    with pytest.raises(ValueError, match="revoked"):
        revoked.add(key.public(), NOW)
    with pytest.raises(ValueError, match="revoked"):
        revoked.retire(key.kid, NOW + DAY)
    assert revoked.revoke(key.kid, NOW + 5) is revoked
    assert not revoked.can_publish(key.kid) and trust.can_publish(key.kid)


def test_trust_store_json_round_trip_and_strictness(trust: TrustStore, key: SigningKey) -> None:
    store = trust.add(fw_key(b"k2").public(), NOW).revoke(key.kid, NOW, "stolen")
    again = TrustStore.from_json(store.to_json())
    assert [e.to_json() for e in again] == [e.to_json() for e in store]
    doubled = store.to_json()
    doubled["keys"].append(doubled["keys"][0])
    for bad in (
        {"format": "x", "keys": []},
        doubled,
        {"format": "hatchway-fw-trust/1", "keys": [{"jwk": {}, "status": "active"}]},
        {"format": "hatchway-fw-trust/1", "keys": [{**store.to_json()["keys"][0], "x": 1}]},
    ):
        with pytest.raises(ValueError):
            TrustStore.from_json(bad)


def test_only_ed25519_keys_are_firmware_keys(trust: TrustStore) -> None:
    es = generate_signing_key(SignAlg.ES256)
    with pytest.raises(ValueError, match="Ed25519"):
        trust.add(es.public(), NOW)
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_jwk(es.public().to_jwk())
    with pytest.raises(ValueError, match="Ed25519"):
        load_private_jwk(es.to_jwk())
    with pytest.raises(ValueError, match="private"):
        load_public_jwk(fw_key().to_jwk())
