"""Interop with joserfc: the manifest is a standard JWS and the wrapped key a standard JWE.

joserfc warns that ``EdDSA`` is deprecated by RFC 9864 (fully-specified algorithms);
hatchway keeps ``EdDSA`` like its message suites, and the warning is silenced locally.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws
from joserfc.errors import SecurityWarning
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry

from hatchway.firmware import (
    DevicePosition,
    TrustStore,
    check_manifest,
    unwrap_content_key,
    wrap_content_key,
)
from hatchway.msgsec._codec import b64e
from hatchway.msgsec.keys import SigningKey, generate_decryption_key
from hatchway.runtime import SeededRandom
from tests.firmware.conftest import NOW, make_manifest, signed


@contextmanager
def eddsa_ok() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        yield


def _rfc_key(jwk: dict[str, str]) -> ECKey | OKPKey:
    return ECKey.import_key(jwk) if jwk["kty"] == "EC" else OKPKey.import_key(jwk)


def test_joserfc_verifies_the_manifest(key: SigningKey, image: bytes) -> None:
    token = signed(image, key)
    with eddsa_ok():
        obj = rfc_jws.deserialize_compact(
            token.decode(),
            OKPKey.import_key(key.public().to_jwk()),
            registry=JWSRegistry(algorithms=["EdDSA"]),
        )
    assert obj.protected == {"alg": "EdDSA", "kid": key.kid, "typ": "hatchway-fw-manifest+jwt"}
    assert json.loads(obj.payload) == make_manifest(image).to_claims()


def test_hatchway_accepts_a_manifest_signed_by_joserfc(
    key: SigningKey, trust: TrustStore, image: bytes
) -> None:
    header = {"alg": "EdDSA", "kid": key.kid, "typ": "hatchway-fw-manifest+jwt"}
    payload = json.dumps(make_manifest(image).to_claims())
    with eddsa_ok():
        token = rfc_jws.serialize_compact(
            header,
            payload,
            OKPKey.import_key(key.to_jwk()),
            registry=JWSRegistry(algorithms=["EdDSA"]),
        )
    position = DevicePosition("acme-meter-v2", 20, "2.0.0")
    assert check_manifest(token, trust=trust, position=position, now=NOW) == make_manifest(image)


@pytest.mark.parametrize("crv", ["P-256", "X25519"])
def test_joserfc_unwraps_the_content_key(crv: str) -> None:
    device = generate_decryption_key(crv, random=SeededRandom(crv.encode()))
    cek, digest = bytes(range(32)), bytes(range(32, 64))
    token = wrap_content_key(cek, digest, device.public(), SeededRandom(b"wrap"))
    plain = rfc_jwe.decrypt_compact(
        token.decode(),
        _rfc_key(device.to_jwk()),
        registry=JWERegistry(algorithms=["ECDH-ES+A256KW", "A256GCM"]),
    )
    assert plain.protected["typ"] == "hatchway-fw-key"
    assert plain.plaintext is not None
    assert json.loads(plain.plaintext) == {"k": b64e(cek).decode(), "sha256": b64e(digest).decode()}


@pytest.mark.parametrize("crv", ["P-256", "X25519"])
def test_hatchway_unwraps_a_key_wrapped_by_joserfc(crv: str) -> None:
    device = generate_decryption_key(crv, random=SeededRandom(crv.encode()))
    cek, digest = bytes(range(32)), bytes(range(32, 64))
    body = json.dumps({"k": b64e(cek).decode(), "sha256": b64e(digest).decode()})
    header = {
        "alg": "ECDH-ES+A256KW",
        "enc": "A256GCM",
        "kid": device.kid,
        "typ": "hatchway-fw-key",
    }
    token = rfc_jwe.encrypt_compact(
        header,
        body,
        _rfc_key(device.public().to_jwk()),
        registry=JWERegistry(algorithms=["ECDH-ES+A256KW", "A256GCM"]),
    )
    assert unwrap_content_key(token, device, digest) == cek
