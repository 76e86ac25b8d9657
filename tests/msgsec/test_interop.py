"""Interop both ways with joserfc and jwcrypto (the tokens are standard JOSE).

joserfc warns that ``EdDSA`` is deprecated by RFC 9864 (fully-specified
algorithms); the warning is expected for the EdDSA suites and silenced locally.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from joserfc import jwe as rfc_jwe
from joserfc import jwt as rfc_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt
from jwcrypto.common import json_encode

from conftest import DEVICE, SERVER, World, make_world
from hatchway.msgsec import KeyAlg, SignAlg

SUITES = list(itertools.product(SignAlg, KeyAlg, ("P-256", "X25519")))


@contextmanager
def eddsa_ok() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        yield


def _rfc_key(jwk: dict[str, str]) -> ECKey | OKPKey:
    return ECKey.import_key(jwk) if jwk["kty"] == "EC" else OKPKey.import_key(jwk)


def _claims(w: World) -> dict[str, object]:
    return w.message().to_claims()


@pytest.mark.parametrize(("sign", "key", "crv"), SUITES)
def test_joserfc_opens_what_hatchway_seals(sign: SignAlg, key: KeyAlg, crv: str) -> None:
    w = make_world(sign, key, crv)
    token = w.seal().decode()
    with eddsa_ok():
        plain = rfc_jwe.decrypt_compact(
            token,
            _rfc_key(w.decryption.to_jwk()),
            registry=JWERegistry(algorithms=[key.value, "A256GCM"]),
        )
        assert plain.protected["cty"] == "JWT"
        assert plain.plaintext is not None
        decoded = rfc_jwt.decode(
            plain.plaintext,
            _rfc_key(w.signing.public().to_jwk()),
            registry=JWSRegistry(algorithms=[sign.value]),
        )
    assert decoded.header["typ"] == "hatchway-telemetry+jwt"
    assert decoded.claims == _claims(w)


@pytest.mark.parametrize(("sign", "key", "crv"), SUITES)
def test_hatchway_opens_what_joserfc_seals(sign: SignAlg, key: KeyAlg, crv: str) -> None:
    w = make_world(sign, key, crv)
    inner = {"alg": sign.value, "kid": w.signing.kid, "typ": "hatchway-telemetry+jwt"}
    outer = {"alg": key.value, "enc": "A256GCM", "kid": w.decryption.kid, "cty": "JWT"}
    with eddsa_ok():
        signed = rfc_jwt.encode(
            inner,
            _claims(w),
            _rfc_key(w.signing.to_jwk()),
            registry=JWSRegistry(algorithms=[sign.value]),
        )
        token = rfc_jwe.encrypt_compact(
            outer,
            signed,
            _rfc_key(w.decryption.public().to_jwk()),
            registry=JWERegistry(algorithms=[key.value, "A256GCM"]),
        )
    assert w.open(token)[0] == w.message()


@pytest.mark.parametrize(("sign", "key", "crv"), SUITES)
def test_jwcrypto_opens_what_hatchway_seals(sign: SignAlg, key: KeyAlg, crv: str) -> None:
    w = make_world(sign, key, crv)
    dec = jc_jwe.JWE(algs=[key.value, "A256GCM"])
    dec.deserialize(w.seal().decode(), key=jc_jwk.JWK(**w.decryption.to_jwk()))
    assert json.loads(dec.objects["protected"])["cty"] == "JWT"
    token = jc_jwt.JWT(
        jwt=dec.payload.decode(),
        key=jc_jwk.JWK(**w.signing.public().to_jwk()),
        algs=[sign.value],
        check_claims={"iss": DEVICE, "aud": SERVER},
        expected_type="JWS",
    )
    assert json.loads(token.claims) == _claims(w)


@pytest.mark.parametrize(("sign", "key", "crv"), SUITES)
def test_hatchway_opens_what_jwcrypto_seals(sign: SignAlg, key: KeyAlg, crv: str) -> None:
    w = make_world(sign, key, crv)
    inner = jc_jwt.JWT(
        header={"alg": sign.value, "kid": w.signing.kid, "typ": "hatchway-telemetry+jwt"},
        claims=_claims(w),
    )
    inner.make_signed_token(jc_jwk.JWK(**w.signing.to_jwk()))
    enc = jc_jwe.JWE(
        inner.serialize().encode(),
        protected=json_encode(
            {"alg": key.value, "enc": "A256GCM", "kid": w.decryption.kid, "cty": "JWT"}
        ),
    )
    enc.add_recipient(jc_jwk.JWK(**w.decryption.public().to_jwk()))
    assert w.open(enc.serialize(compact=True))[0] == w.message()


def test_library_tokens_still_face_the_policy() -> None:
    # A correctly built joserfc token with a disallowed enc is still rejected.
    w = make_world()
    signed = rfc_jwt.encode(
        {"alg": "ES256", "kid": w.signing.kid, "typ": "hatchway-telemetry+jwt"},
        _claims(w),
        _rfc_key(w.signing.to_jwk()),
        registry=JWSRegistry(algorithms=["ES256"]),
    )
    token = rfc_jwe.encrypt_compact(
        {"alg": "ECDH-ES", "enc": "A128GCM", "kid": w.decryption.kid, "cty": "JWT"},
        signed,
        _rfc_key(w.decryption.public().to_jwk()),
        registry=JWERegistry(algorithms=["ECDH-ES", "A128GCM"]),
    )
    w.rejects(token)
