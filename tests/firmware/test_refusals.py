"""Every reason a device refuses a manifest (issue 9, "the device refuses"), and header attacks.

Signature and format problems must all look the same (opaque ``invalid``);
policy refusals must each carry their own reason, because the device reports it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hatchway.firmware import (
    DevicePosition,
    InvalidManifest,
    ManifestRefused,
    RefusalReason,
    TrustStore,
    check_manifest,
    sign_manifest,
)
from hatchway.firmware.manifest import MAX_MANIFEST_BYTES
from hatchway.msgsec import _jose
from hatchway.msgsec.algorithms import SignAlg
from hatchway.msgsec.keys import SigningKey, generate_signing_key
from hatchway.runtime import SeededRandom
from hatchway.server.datadir import ensure_data_dir
from tests.firmware.conftest import DAY, NOW, fw_key, make_manifest, signed

POSITION = DevicePosition("acme-meter-v2", sequence=20, version="2.0.0")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refusal(
    token: bytes | str,
    trust: TrustStore,
    *,
    position: DevicePosition = POSITION,
    now: float = NOW + 60,
) -> RefusalReason:
    with pytest.raises(ManifestRefused) as info:
        check_manifest(token, trust=trust, position=position, now=now)
    return info.value.reason


def test_round_trip_accepts_and_returns_the_signed_claims(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    manifest = check_manifest(signed(image, key), trust=trust, position=POSITION, now=NOW + 60)
    assert manifest == make_manifest(image)
    assert manifest.kid == key.kid
    assert manifest.sha256 == hashlib.sha256(image).digest()


@pytest.mark.parametrize("sequence", [20, 19, 1])
def test_lower_or_equal_sequence_is_rollback(
    trust: TrustStore, image: bytes, sequence: int
) -> None:
    assert _refusal(signed(image, sequence=sequence), trust) is RefusalReason.ROLLBACK


def test_wrong_class(trust: TrustStore, image: bytes) -> None:
    assert _refusal(signed(image, device_class="acme-meter-v3"), trust) is RefusalReason.WRONG_CLASS


def test_expired_at_exp_and_after(trust: TrustStore, image: bytes) -> None:
    token = signed(image, expires_at=NOW + DAY)
    assert _refusal(token, trust, now=NOW + DAY) is RefusalReason.EXPIRED
    assert _refusal(token, trust, now=NOW + 2 * DAY) is RefusalReason.EXPIRED
    check_manifest(token, trust=trust, position=POSITION, now=NOW + DAY - 1)


def test_issued_in_the_future_is_refused_as_not_fresh(trust: TrustStore, image: bytes) -> None:
    token = signed(image, issued_at=NOW + 3600, expires_at=NOW + 7200)
    assert _refusal(token, trust, now=NOW) is RefusalReason.EXPIRED
    check_manifest(token, trust=trust, position=POSITION, now=NOW + 3600 - 300)


def test_below_minimum_version(trust: TrustStore, image: bytes) -> None:
    token = signed(image, min_version="2.0.1")
    assert _refusal(token, trust) is RefusalReason.BELOW_MIN_VERSION
    newer = DevicePosition("acme-meter-v2", 20, "2.0.1")
    check_manifest(token, trust=trust, position=newer, now=NOW + 60)
    # Numeric, not lexical: 2.0.10 is above 2.0.9.
    check_manifest(
        signed(image, min_version="2.0.9"),
        trust=trust,
        position=DevicePosition("acme-meter-v2", 20, "2.0.10"),
        now=NOW + 60,
    )


def test_image_larger_than_the_slot_is_too_large(trust: TrustStore, image: bytes) -> None:
    small = DevicePosition("acme-meter-v2", 20, "2.0.0", max_image_size=len(image) - 1)
    assert _refusal(signed(image), trust, position=small) is RefusalReason.TOO_LARGE


def test_untrusted_key(trust: TrustStore, image: bytes) -> None:
    other = fw_key(b"someone-else")
    assert _refusal(signed(image, other), trust) is RefusalReason.UNTRUSTED_KEY


def test_manifest_signed_by_the_servers_message_key_is_refused(
    trust: TrustStore, image: bytes
) -> None:
    """A stolen server holds its message key; that key signs no firmware a device installs."""
    for alg in (SignAlg.EDDSA, SignAlg.ES256):
        server_key = generate_signing_key(alg, random=SeededRandom(b"server-message-key"))
        header = {"alg": alg.value, "kid": server_key.kid, "typ": "hatchway-fw-manifest+jwt"}
        payload = json.dumps(make_manifest(image).to_claims()).encode()
        token = _jose.jws_encode(header, payload, server_key.key)
        reason = _refusal(token, trust)
        # EdDSA: the kid is not a firmware key. ES256: not even an allowed alg.
        assert reason is (
            RefusalReason.UNTRUSTED_KEY if alg is SignAlg.EDDSA else RefusalReason.INVALID
        )


def test_manifest_signed_by_a_real_server_data_dirs_message_key_is_refused(
    trust: TrustStore, key: SigningKey, image: bytes, tmp_path: Path
) -> None:
    """The key ``hatchway serve`` actually signs messages with, under its own kid and ours."""
    server_key = ensure_data_dir(tmp_path, now=datetime.fromtimestamp(NOW, UTC)).signing_key
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    for kid in (server_key.kid, key.kid):
        header = {"alg": server_key.alg.value, "kid": kid, "typ": "hatchway-fw-manifest+jwt"}
        token = _jose.jws_encode(header, payload, server_key.key)
        assert _refusal(token, trust) is RefusalReason.INVALID  # ES256 is not allowed at all
    # Trusting it by mistake does not help: it is not an Ed25519 firmware key.
    with pytest.raises(ValueError, match="Ed25519"):
        trust.add(server_key.public(), NOW)


def test_server_key_under_a_trusted_kid_fails_the_signature(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    """Relabelling the server's signature with the firmware kid gets only the opaque failure."""
    server_key = generate_signing_key(SignAlg.EDDSA, random=SeededRandom(b"server"))
    header = {"alg": "EdDSA", "kid": key.kid, "typ": "hatchway-fw-manifest+jwt"}
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    token = _jose.jws_encode(header, payload, server_key.key)
    with pytest.raises(InvalidManifest) as info:
        check_manifest(token, trust=trust, position=POSITION, now=NOW + 60)
    assert info.value.reason is RefusalReason.INVALID
    assert str(info.value) == "firmware refused: invalid"


def test_revoked_key(trust: TrustStore, key: SigningKey, image: bytes) -> None:
    revoked = trust.revoke(key.kid, NOW, "laptop stolen")
    assert _refusal(signed(image, key), revoked) is RefusalReason.REVOKED_KEY


def test_retired_key_is_accepted_only_during_its_overlap(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    retired = trust.retire(key.kid, NOW + DAY)
    check_manifest(signed(image, key), trust=retired, position=POSITION, now=NOW + 60)
    assert _refusal(signed(image, key), retired, now=NOW + DAY) is RefusalReason.RETIRED_KEY


def test_tampered_payload_is_opaque_invalid(trust: TrustStore, image: bytes) -> None:
    head, payload, sig = signed(image).split(b".")
    claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    claims["seq"] = 99
    forged = b".".join((head, _b64(json.dumps(claims).encode()).encode(), sig))
    assert _refusal(forged, trust) is RefusalReason.INVALID


def test_oversized_manifest_is_too_large_before_parsing(trust: TrustStore) -> None:
    junk = b"x" * (MAX_MANIFEST_BYTES + 1)  # not even a JWS: the cap comes first
    assert _refusal(junk, trust) is RefusalReason.TOO_LARGE
    assert _refusal(junk.decode(), trust) is RefusalReason.TOO_LARGE


@pytest.mark.parametrize("cut", [1, 10, 100, 400])
def test_truncated_manifest_is_invalid(trust: TrustStore, image: bytes, cut: int) -> None:
    token = signed(image)
    assert _refusal(token[:-cut], trust) is RefusalReason.INVALID
    assert _refusal(token[:cut], trust) is RefusalReason.INVALID


def _forge(header: dict[str, object], payload: bytes, sig: bytes = b"") -> bytes:
    return f"{_b64(json.dumps(header).encode())}.{_b64(payload)}.{_b64(sig)}".encode()


def test_alg_none_is_invalid(trust: TrustStore, key: SigningKey, image: bytes) -> None:
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    token = _forge({"alg": "none", "kid": key.kid, "typ": "hatchway-fw-manifest+jwt"}, payload)
    assert _refusal(token, trust) is RefusalReason.INVALID


def test_hs256_with_the_public_key_as_secret_is_invalid(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    """The classic key-confusion attack: HMAC keyed with the public key bytes."""
    header = {"alg": "HS256", "kid": key.kid, "typ": "hatchway-fw-manifest+jwt"}
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}".encode()
    secret = json.dumps(key.public().to_jwk()).encode()
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    assert _refusal(signing_input + b"." + _b64(mac).encode(), trust) is RefusalReason.INVALID


@pytest.mark.parametrize("member", ["jku", "jwk", "x5u", "x5c", "crit"])
def test_key_carrying_headers_are_invalid_even_when_the_signature_is_good(
    trust: TrustStore, image: bytes, member: str
) -> None:
    """A token naming its own key is refused even though its signature verifies."""
    attacker = fw_key(b"attacker")
    value: object = {
        "jku": "https://evil.example/jwks.json",
        "jwk": attacker.public().to_jwk(),
        "x5u": "https://evil.example/cert.pem",
        "x5c": ["MIIB"],
        "crit": ["exp"],
    }[member]
    header = {"alg": "EdDSA", "kid": attacker.kid, "typ": "hatchway-fw-manifest+jwt", member: value}
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    token = _jose.jws_encode(header, payload, attacker.key)  # type: ignore[arg-type]
    assert _refusal(token, trust) is RefusalReason.INVALID
    # Even with the attacker's key trusted, the header allow-list still refuses it.
    assert _refusal(token, trust.add(attacker.public(), NOW)) is RefusalReason.INVALID


@pytest.mark.parametrize("typ", [None, "JWT", "hatchway-fw-rotate+jwt", "hatchway-telemetry+jwt"])
def test_wrong_typ_is_invalid(
    trust: TrustStore, key: SigningKey, image: bytes, typ: str | None
) -> None:
    header = {"alg": "EdDSA", "kid": key.kid}
    if typ is not None:
        header["typ"] = typ
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    assert _refusal(_jose.jws_encode(header, payload, key.key), trust) is RefusalReason.INVALID


def test_missing_kid_is_invalid(trust: TrustStore, key: SigningKey, image: bytes) -> None:
    header = {"alg": "EdDSA", "typ": "hatchway-fw-manifest+jwt"}
    payload = json.dumps(make_manifest(image).to_claims()).encode()
    token = _jose.jws_encode(header, payload, key.key)  # type: ignore[arg-type]
    assert _refusal(token, trust) is RefusalReason.INVALID


def test_unknown_or_mistyped_claims_are_invalid_even_when_signed(
    trust: TrustStore, key: SigningKey, image: bytes
) -> None:
    good = make_manifest(image).to_claims()
    variants = [
        {**good, "install_anyway": True},
        {**good, "seq": "21"},
        {**good, "seq": True},
        {**good, "chunk_size": 4096},
        {**good, "chunks": good["chunks"][:-1]},
        {**good, "mv": 2},
        {**good, "version": "2.1.0-rc1"},
        {k: v for k, v in good.items() if k != "exp"},
        {**good, "min_version": None},  # a second spelling of "absent" (found by hypothesis)
        {**good, "rotate": None},
    ]
    header = {"alg": "EdDSA", "kid": key.kid, "typ": "hatchway-fw-manifest+jwt"}
    for claims in variants:
        token = _jose.jws_encode(header, json.dumps(claims).encode(), key.key)
        assert _refusal(token, trust) is RefusalReason.INVALID, claims


def test_signing_refuses_a_non_firmware_key(image: bytes) -> None:
    with pytest.raises(ValueError, match="Ed25519"):
        sign_manifest(make_manifest(image), generate_signing_key(SignAlg.ES256))
