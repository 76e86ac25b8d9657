"""Build hostile tokens with the *real* keys, so only the check under test fails.

Raw construction on purpose: ``seal`` refuses to produce most of these.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import World
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import b64e


def _merge(base: dict[str, Any], changes: dict[str, Any] | None) -> dict[str, Any]:
    out = {**base, **(changes or {})}
    return {k: v for k, v in out.items() if v is not None}


def inner(
    w: World,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    raw_claims: bytes | None = None,
    raw_header: bytes | None = None,
    signature: bytes | None = None,
) -> bytes:
    """A compact JWS signed with the device key unless told otherwise."""
    h = _merge(
        {"alg": w.suite.sign.value, "kid": w.signing.kid, "typ": "hatchway-telemetry+jwt"}, header
    )
    c = _merge(w.message().to_claims(), claims)
    head = raw_header if raw_header is not None else json.dumps(h).encode()
    body = raw_claims if raw_claims is not None else json.dumps(c).encode()
    signing_input = b64e(head) + b"." + b64e(body)
    if signature is None:
        alg = h.get("alg")
        if alg == "HS256":  # key confusion: MAC keyed with the public key bytes
            secret = json.dumps(w.signing.public().to_jwk()).encode()
            signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
        elif alg in ("ES256", "EdDSA") and alg == w.suite.sign.value:
            signature = _jose.sign(alg, w.signing.key, signing_input)
        else:
            signature = b"\x01" * 64
    return signing_input + b"." + b64e(signature)


def outer(
    w: World,
    plaintext: bytes,
    *,
    header: dict[str, Any] | None = None,
    raw_header: bytes | None = None,
    encrypted_key: bytes | None = None,
    recipient: Any = None,
) -> bytes:
    """A compact JWE to the server key; key agreement follows ``header['alg']``."""
    public = recipient or w.decryption.public().key
    eph = _jose.ephemeral_for(public, w.rng)
    z = _jose.ecdh(eph, public)
    base = {
        "alg": w.suite.key.value,
        "enc": "A256GCM",
        "kid": w.decryption.kid,
        "cty": "JWT",
        "epk": json.loads(_jose.public_to_epk(eph.public_key())),
    }
    h = _merge(base, header)
    alg, enc = h.get("alg"), h.get("enc")
    bits = _jose.GCM_BITS.get(enc, 256) if isinstance(enc, str) else 256
    kw = _jose.KW_BITS.get(alg) if isinstance(alg, str) else None
    if alg == "ECDH-ES":
        cek, ek = _jose.concat_kdf(z, str(enc), bits), b""
    elif kw:
        cek = w.rng(bits // 8)
        ek = _jose.wrap(_jose.concat_kdf(z, alg, kw), cek)
    else:
        cek, ek = w.rng(bits // 8), b"\x02" * 40
    protected = b64e(raw_header if raw_header is not None else json.dumps(h).encode())
    iv = w.rng(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected)
    ek = ek if encrypted_key is None else encrypted_key
    return b".".join((protected, b64e(ek), b64e(iv), b64e(sealed[:-16]), b64e(sealed[-16:])))


def nested(w: World, **inner_kw: Any) -> bytes:
    return outer(w, inner(w, **inner_kw))
