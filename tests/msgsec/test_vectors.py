"""Known-answer vectors, kept as data under tests/vectors/jose/ and named after
the spec section they come from."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import _forge
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from conftest import World, make_world, vector
from hatchway.msgsec import SigningKey, VerifyingKey, _jose, thumbprint
from hatchway.msgsec._codec import b64d

RFC7520 = vector("rfc7520.json")
ALLOWED_ALGS = frozenset({"ECDH-ES", "ECDH-ES+A256KW"})
ALLOWED_ENCS = frozenset({"A256GCM"})


CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


def _ec_private(jwk: dict[str, str]) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64d(jwk["d"].encode()), "big"), CURVES[jwk["crv"]])


def _ec_public(jwk: dict[str, str]) -> ec.EllipticCurvePublicKey:
    x, y = (int.from_bytes(b64d(jwk[c].encode()), "big") for c in ("x", "y"))
    return ec.EllipticCurvePublicNumbers(x, y, CURVES[jwk["crv"]]).public_key()


def _u(text: str) -> bytes:
    return b64d(text.encode())


def test_rfc7518_appendix_c_concat_kdf() -> None:
    v = vector("rfc7518_appendix_c.json")
    alice, bob = _ec_private(v["alice_ephemeral"]), _ec_private(v["bob"])
    z = _jose.ecdh(alice, bob.public_key())
    assert z == bytes(v["z"]) == _jose.ecdh(bob, alice.public_key())
    key = _jose.concat_kdf(z, v["enc"], v["key_bits"], _u(v["apu"]), _u(v["apv"]))
    assert key == _u(v["derived_key"])


def test_rfc3394_section_4_6_aes256_key_wrap() -> None:
    v = vector("rfc3394_4_6.json")
    kek, data = bytes.fromhex(v["kek"]), bytes.fromhex(v["key_data"])
    assert _jose.wrap(kek, data) == bytes.fromhex(v["ciphertext"])
    assert _jose.unwrap(kek, bytes.fromhex(v["ciphertext"])) == data
    with pytest.raises(_jose.JoseError):
        _jose.unwrap(kek, bytes.fromhex(v["ciphertext"])[:-1] + b"\x00")


def test_rfc7520_section_4_3_es512_verifies_but_is_not_allowed() -> None:
    v = RFC7520["4.3"]
    # The data is sound (jwcrypto verifies it) ...
    checker = jc_jws.JWS()
    checker.deserialize(v["compact"])
    checker.verify(jc_jwk.JWK(**v["key"]), alg="ES512")
    assert checker.payload.startswith(b"It\xe2\x80\x99s a dangerous business")
    # ... but ES512/P-521 is outside hatchway's allow-list at every layer.
    parts = _jose.jws_parse(v["compact"].encode(), frozenset({"alg", "kid"}))
    with pytest.raises(_jose.JoseError):
        _jose.verify(
            parts.header["alg"], _ec_public(v["key"]), parts.signing_input, parts.signature
        )
    with pytest.raises(ValueError):
        VerifyingKey.from_jwk(v["key"])
    w = make_world()
    w.rejects(_forge.outer(w, v["compact"].encode()))


def test_rfc7520_section_5_4_ecdh_es_a128kw_primitives() -> None:
    v = RFC7520["5.4"]
    z = _jose.ecdh(_ec_private(v["key"]), _ec_public(v["epk"]))
    assert z == _jose.ecdh(_ec_private(v["epk"]), _ec_public(v["key"]))
    kek = _jose.concat_kdf(z, "ECDH-ES+A128KW", 128)
    cek = _jose.unwrap(kek, _u(v["encrypted_key"]))
    assert cek == _u(v["cek"])
    assert _jose.wrap(kek, cek) == _u(v["encrypted_key"])
    protected, _ek, iv, ct, tag = v["compact"].split(".")
    plain = AESGCM(cek).decrypt(_u(iv), _u(ct) + _u(tag), protected.encode())
    assert plain.decode() == v["plaintext"]


def test_rfc7520_section_5_4_rejected_by_policy(world: World) -> None:
    # P-384 and ECDH-ES+A128KW: outside the allow-list even with the right kid.
    world.rejects(RFC7520["5.4"]["compact"])
    parts = _jose.jwe_parse(RFC7520["5.4"]["compact"].encode())
    with pytest.raises(_jose.JoseError):
        _jose.jwe_decrypt(parts, world.decryption.key, "P-256", ALLOWED_ALGS, ALLOWED_ENCS)


def test_rfc7520_section_5_5_ecdh_es_concat_kdf() -> None:
    v = RFC7520["5.5"]
    z = _jose.ecdh(_ec_private(v["epk"]), _ec_public(v["key"]))
    assert _jose.concat_kdf(z, v["enc"], 256) == _u(v["cek"])
    with pytest.raises(_jose.JoseError):  # A128CBC-HS256: 128-bit IV, not AES-GCM
        _jose.jwe_parse(v["compact"].encode())
    make_world().rejects(v["compact"])


def test_rfc7520_section_6_nesting_aes_gcm_and_rejection(world: World) -> None:
    v = RFC7520["6"]
    plain = AESGCM(_u(v["cek"])).decrypt(
        _u(v["iv"]), _u(v["ciphertext"]) + _u(v["tag"]), v["protected"].encode()
    )
    assert plain.decode() == v["inner_jws"]
    header = _jose.jwe_parse(v["compact"].encode()).header
    assert header == {"alg": "RSA-OAEP", "cty": "JWT", "enc": "A128GCM"}
    world.rejects(v["compact"])  # RSA-OAEP outside, PS256 inside: both disallowed
    world.rejects(_forge.outer(world, v["inner_jws"].encode()))


def test_rfc8037_appendix_a_ed25519() -> None:
    v = vector("rfc8037_ed25519.json")
    key = SigningKey.from_jwk(v["key"])
    assert key.kid == thumbprint(key.key.public_key()) == v["thumbprint"]  # A.3
    header, payload, _sig = v["compact"].split(".")
    assert (
        _jose.jws_encode({"alg": "EdDSA"}, v["payload"].encode(), key.key).decode()
        == (v["compact"])
    )  # A.4: Ed25519 is deterministic
    parts = _jose.jws_parse(v["compact"].encode())
    _jose.verify("EdDSA", key.public().key, parts.signing_input, parts.signature)  # A.5
    assert parts.payload == v["payload"].encode() and header and payload


WYCHEPROOF_JWS = vector("wycheproof_jws.json")
JWS_CASES = [(g, t) for g in WYCHEPROOF_JWS["testGroups"] for t in g["tests"]]


@pytest.mark.parametrize(("group", "case"), JWS_CASES, ids=[f"tc{t['tcId']}" for _, t in JWS_CASES])
def test_wycheproof_json_web_signature(group: dict[str, Any], case: dict[str, Any]) -> None:
    def verify() -> None:
        key = VerifyingKey.from_jwk(group["public"])
        parts = _jose.jws_parse(case["jws"].encode(), frozenset({"alg", "kid"}))
        _jose.verify(parts.header["alg"], key.key, parts.signing_input, parts.signature)
        assert parts.payload == b"foo"

    if group["allowed"] and case["result"] == "valid":
        verify()
    else:
        with pytest.raises((_jose.JoseError, ValueError)):
            verify()


WYCHEPROOF_JWE = vector("wycheproof_jwe.json")
JWE_CASES = [(g, t) for g in WYCHEPROOF_JWE["testGroups"] for t in g["tests"]]
ALL_KW, ALL_GCM = frozenset(_jose.KW_BITS), frozenset(_jose.GCM_BITS)


@pytest.mark.parametrize(("group", "case"), JWE_CASES, ids=[f"tc{t['tcId']}" for _, t in JWE_CASES])
def test_wycheproof_json_web_encryption(group: dict[str, Any], case: dict[str, Any]) -> None:
    token = case["jwe"].encode()
    header: dict[str, Any] = {}
    with contextlib.suppress(ValueError):  # malformed headers are part of the data set
        header = json.loads(_u(token.split(b".")[0].decode()))
    uses_gcm = header.get("enc") in ALL_GCM and header.get("alg") in ALL_KW
    private = group["private"]

    def decrypt(algs: frozenset[str], encs: frozenset[str]) -> bytes:
        parts = _jose.jwe_parse(token, frozenset({"alg", "enc", "epk", "kid"}))
        return _jose.jwe_decrypt(parts, _ec_private(private), "P-256", algs, encs)

    # 1. The primitives agree with Wycheproof wherever they apply.
    if private and uses_gcm and case["result"] == "valid":
        assert decrypt(ALL_KW, ALL_GCM) == bytes.fromhex(case["pt"])
    elif private:
        with pytest.raises(_jose.JoseError):
            decrypt(ALL_KW, ALL_GCM)
    # 2. The allow-list decides the rest: only our alg/enc pairs may open.
    ours = header.get("alg") in ALLOWED_ALGS and header.get("enc") in ALLOWED_ENCS
    if private and ours and case["result"] == "valid":
        assert decrypt(ALLOWED_ALGS, ALLOWED_ENCS) == b"foo"
    elif private:
        with pytest.raises(_jose.JoseError):
            decrypt(ALLOWED_ALGS, ALLOWED_ENCS)
    make_world().rejects(token)


def test_wycheproof_tc51_invalid_curve_point_rejected() -> None:
    case = next(t for _, t in JWE_CASES if t["tcId"] == 51)
    epk = json.loads(_u(case["jwe"].split(".")[0]))["epk"]
    with pytest.raises(_jose.JoseError):
        _jose.epk_to_public(epk, "P-256")
