"""Hazardous low-level JOSE: compact JWS/JWE built directly on ``cryptography``.

Nothing here applies policy beyond what the caller passes in. It implements:

* RFC 7515 §3.1 / §5.2 compact JWS with ES256 (RFC 7518 §3.4: the signature is
  the fixed-width big-endian ``R || S``, not DER) and EdDSA (RFC 8037 §3.1);
* RFC 7516 §3.1 / §5.1 / §5.2 compact JWE with ECDH-ES and ECDH-ES+AxxxKW
  (RFC 7518 §4.6, Concat KDF of NIST SP 800-56A §5.8.1 as profiled in §4.6.2),
  AES Key Wrap (RFC 3394, RFC 7518 §4.4) and AES-GCM (RFC 7518 §5.3), on P-256 or
  X25519 (RFC 8037 §3.2).

The AES-KW and AES-GCM widths are table-driven so the Wycheproof and RFC 7520
vectors can exercise the primitives; ``hatchway.msgsec.seal`` narrows the tables
to the allow-list. Every failure raises ``JoseError`` whose text is a log reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hatchway.msgsec._codec import CodecError, b64d, b64e, dumps, loads_object
from hatchway.runtime import system_random

SignPrivate = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
SignPublic = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
AgreePrivate = ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey
AgreePublic = ec.EllipticCurvePublicKey | x25519.X25519PublicKey

P256 = ec.SECP256R1()
# Order of the P-256 base point (FIPS 186-4 §D.1.2.3); ephemeral scalars are
# drawn below it from injected randomness.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

#: Key-wrap width for each ECDH ``alg``; ``None`` means Direct Key Agreement.
KW_BITS: dict[str, int | None] = {
    "ECDH-ES": None,
    "ECDH-ES+A128KW": 128,
    "ECDH-ES+A192KW": 192,
    "ECDH-ES+A256KW": 256,
}
#: Content key width for each AES-GCM ``enc``.
GCM_BITS: dict[str, int] = {"A128GCM": 128, "A192GCM": 192, "A256GCM": 256}

#: Header members the outer JWE may carry (RFC 7516 §4.1, RFC 7518 §4.6.1).
JWE_MEMBERS = frozenset({"alg", "enc", "kid", "epk", "cty"})
#: Header members the inner JWS may carry (RFC 7515 §4.1, RFC 8725 §3.11).
JWS_MEMBERS = frozenset({"alg", "kid", "typ"})

_IV_LEN = 12  # RFC 7518 §5.3: 96-bit IV
_TAG_LEN = 16  # RFC 7518 §5.3: 128-bit tag
_ECDSA = ec.ECDSA(hashes.SHA256())
# RFC 6979 nonces make signatures reproducible under injected test randomness.
# With the OS source, OpenSSL's own nonces are hedged (derived from the key,
# the digest and fresh randomness), equally safe and a few µs cheaper.
_ECDSA_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


class JoseError(Exception):
    """A structural or cryptographic failure; ``str()`` is a log-only reason."""


# --- Concat KDF, ECDH, key wrap ------------------------------------------------


def concat_kdf(z: bytes, alg_id: str, key_bits: int, apu: bytes = b"", apv: bytes = b"") -> bytes:
    """RFC 7518 §4.6.2: Concat KDF with SHA-256 and the JOSE OtherInfo layout."""
    alg = alg_id.encode()
    other = (
        len(alg).to_bytes(4, "big")
        + alg
        + len(apu).to_bytes(4, "big")
        + apu
        + len(apv).to_bytes(4, "big")
        + apv
        + key_bits.to_bytes(4, "big")
    )
    rounds = -(-key_bits // 256)
    out = b"".join(
        hashlib.sha256(i.to_bytes(4, "big") + z + other).digest() for i in range(1, rounds + 1)
    )
    return out[: key_bits // 8]


def ecdh(private: AgreePrivate, public: AgreePublic) -> bytes:
    """The shared secret Z; X25519's all-zero output (small-order point) fails."""
    try:
        if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
            public, ec.EllipticCurvePublicKey
        ):
            return private.exchange(ec.ECDH(), public)
        if isinstance(private, x25519.X25519PrivateKey) and isinstance(
            public, x25519.X25519PublicKey
        ):
            return private.exchange(public)
    except ValueError as exc:
        raise JoseError(f"key agreement failed: {exc}") from None
    raise JoseError("key agreement: mismatched key types")


def wrap(kek: bytes, cek: bytes) -> bytes:
    """RFC 3394 AES Key Wrap (RFC 7518 §4.4)."""
    return aes_key_wrap(kek, cek)


def unwrap(kek: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise JoseError("key unwrap failed") from None


def ephemeral_for(public: AgreePublic, random: Callable[[int], bytes]) -> AgreePrivate:
    """An ephemeral key on the recipient's curve, drawn from injected randomness."""
    if isinstance(public, x25519.X25519PublicKey):
        return x25519.X25519PrivateKey.from_private_bytes(random(32))
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        if random is system_random:
            # Same OS CSPRNG, drawn by OpenSSL's DRBG: keygen skips the extra
            # validation pass of derive_private_key (about 15 µs per message).
            return ec.generate_private_key(P256)
        # 64 extra bits make the modular bias negligible (FIPS 186-4 §B.4.1).
        scalar = int.from_bytes(random(40), "big") % (P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, P256)
    raise JoseError("unsupported recipient key")


def public_to_epk(public: AgreePublic) -> str:
    """RFC 7518 §6.2.1 / RFC 8037 §2 public JWK members as compact JSON.

    Built by hand: base64url needs no JSON escaping, and this runs per message.
    """
    if isinstance(public, x25519.X25519PublicKey):
        x = b64e(public.public_bytes_raw()).decode()
        return f'{{"kty":"OKP","crv":"X25519","x":"{x}"}}'
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    x, y = b64e(point[1:33]).decode(), b64e(point[33:]).decode()
    return f'{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}'


def epk_to_public(epk: object, crv: str) -> AgreePublic:
    """Parse ``epk`` as a *public* key on ``crv``; anything else is rejected.

    A private member, an extra member or a point off the curve would each let a
    sender steer the key agreement (invalid-curve attacks, RFC 8725 §3.4).
    """
    try:
        if crv == "P-256" and isinstance(epk, dict):
            if set(epk) != {"kty", "crv", "x", "y"} or epk["kty"] != "EC" or epk["crv"] != crv:
                raise JoseError("epk: wrong members for P-256")
            x, y = _coord(epk["x"]), _coord(epk["y"])
            return ec.EllipticCurvePublicKey.from_encoded_point(P256, b"\x04" + x + y)
        if crv == "X25519" and isinstance(epk, dict):
            if set(epk) != {"kty", "crv", "x"} or epk["kty"] != "OKP" or epk["crv"] != crv:
                raise JoseError("epk: wrong members for X25519")
            return x25519.X25519PublicKey.from_public_bytes(_coord(epk["x"]))
    except (ValueError, TypeError) as exc:
        raise JoseError(f"epk: invalid point: {exc}") from None
    raise JoseError("epk: not an object or unsupported curve")


def _coord(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 43:
        raise JoseError("epk: coordinate is not 32 bytes")
    return b64d(value.encode("ascii"))


# --- JWS -----------------------------------------------------------------------


def sign(alg: str, key: SignPrivate, data: bytes, *, hedged: bool = False) -> bytes:
    """Raw JWS signature; ``hedged`` picks OpenSSL's nonces over RFC 6979."""
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, _ECDSA if hedged else _ECDSA_DETERMINISTIC))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise JoseError("sign: algorithm does not match key")


def verify(alg: str, key: SignPublic, data: bytes, sig: bytes) -> None:
    """Verify a JWS signature; the key's type must match ``alg``."""
    try:
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                raise JoseError("ES256 signature is not 64 bytes")
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            key.verify(encode_dss_signature(r, s), data, _ECDSA)
            return
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, data)
            return
    except InvalidSignature:
        raise JoseError("bad signature") from None
    raise JoseError("verify: algorithm does not match key")


@lru_cache(maxsize=256)
def _encoded_header(items: tuple[tuple[str, str], ...]) -> bytes:
    # A sender's JWS header is the same for every message of a kind.
    return b64e(dumps(dict(items)))


def jws_encode(
    header: Mapping[str, str], payload: bytes, key: SignPrivate, *, hedged: bool = False
) -> bytes:
    """RFC 7515 §5.1 compact serialization."""
    signing_input = _encoded_header(tuple(header.items())) + b"." + b64e(payload)
    return signing_input + b"." + b64e(sign(header["alg"], key, signing_input, hedged=hedged))


@dataclass(frozen=True, slots=True)
class JwsParts:
    header: Mapping[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes


def jws_parse(token: bytes, members: frozenset[str] = JWS_MEMBERS) -> JwsParts:
    """RFC 7515 §5.2 steps 1-7 with a header-member allow-list."""
    parts = token.split(b".")
    if len(parts) != 3:
        raise JoseError("JWS must have exactly 3 parts")
    try:
        if len(parts[0]) <= 512:
            header: Mapping[str, Any] = _cached_header(parts[0], members)
        else:
            header = _header(parts[0], members)
        return JwsParts(header, parts[0] + b"." + parts[1], b64d(parts[1]), b64d(parts[2]))
    except CodecError as exc:
        raise JoseError(f"JWS encoding: {exc}") from None


@lru_cache(maxsize=512)
def _cached_header(segment: bytes, members: frozenset[str]) -> Mapping[str, Any]:
    # Inner headers repeat per sender and kind; the cache is bounded in count
    # and entry size, and holds read-only views so no caller can poison it.
    return MappingProxyType(_header(segment, members))


def _header(segment: bytes, members: frozenset[str]) -> dict[str, Any]:
    header = loads_object(b64d(segment))
    unknown = header.keys() - members
    if unknown:
        # Covers crit, zip, jku, jwk, x5u, x5c, x5t, b64 ...: we implement none.
        raise JoseError(f"header members not allowed: {sorted(unknown)}")
    if not isinstance(header.get("alg"), str):
        raise JoseError("header alg missing")
    return header


# --- JWE -----------------------------------------------------------------------


@lru_cache(maxsize=256)
def _header_prefix(items: tuple[tuple[str, str], ...]) -> bytes:
    return dumps(dict(items))[:-1] + b',"epk":'


def jwe_encode(
    header: Mapping[str, str],
    plaintext: bytes,
    recipient: AgreePublic,
    ephemeral: AgreePrivate,
    random: Callable[[int], bytes],
) -> bytes:
    """RFC 7516 §5.1 with ECDH-ES[+AxxxKW] (RFC 7518 §4.6) and AES-GCM."""
    alg, enc = header["alg"], header["enc"]
    z = ecdh(ephemeral, recipient)
    epk = public_to_epk(ephemeral.public_key()).encode()
    protected = b64e(_header_prefix(tuple(header.items())) + epk + b"}")
    cek_bits = GCM_BITS[enc]
    kw_bits = KW_BITS[alg]
    if kw_bits is None:
        cek, encrypted_key = concat_kdf(z, enc, cek_bits), b""
    else:
        cek = random(cek_bits // 8)
        encrypted_key = wrap(concat_kdf(z, alg, kw_bits), cek)
    iv = random(_IV_LEN)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected)
    return b".".join(
        (
            protected,
            b64e(encrypted_key),
            b64e(iv),
            b64e(sealed[:-_TAG_LEN]),
            b64e(sealed[-_TAG_LEN:]),
        )
    )


@dataclass(frozen=True, slots=True)
class JweParts:
    header: dict[str, Any]
    protected: bytes  # the received ASCII segment: it is the AAD (RFC 7516 §5.2 step 14)
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes


def jwe_parse(token: bytes, members: frozenset[str] = JWE_MEMBERS) -> JweParts:
    """RFC 7516 §5.2 steps 1-5 with a header-member allow-list."""
    parts = token.split(b".")
    if len(parts) != 5:
        raise JoseError("JWE must have exactly 5 parts")
    try:
        header = _header(parts[0], members)
        ek, iv, ct, tag = (b64d(p) for p in parts[1:])
    except CodecError as exc:
        raise JoseError(f"JWE encoding: {exc}") from None
    if not isinstance(header.get("enc"), str):
        raise JoseError("header enc missing")
    if len(iv) != _IV_LEN or len(tag) != _TAG_LEN:
        raise JoseError("bad IV or tag length")
    return JweParts(header, parts[0], ek, iv, ct, tag)


def jwe_decrypt(
    jwe: JweParts,
    private: AgreePrivate,
    crv: str,
    algs: frozenset[str],
    encs: frozenset[str],
) -> bytes:
    """RFC 7516 §5.2 steps 6-16 for ECDH-ES[+AxxxKW] and AES-GCM."""
    alg, enc = jwe.header["alg"], jwe.header["enc"]
    if alg not in algs or alg not in KW_BITS or enc not in encs or enc not in GCM_BITS:
        raise JoseError(f"alg/enc not allowed: {alg}/{enc}")
    z = ecdh(private, epk_to_public(jwe.header.get("epk"), crv))
    kw_bits = KW_BITS[alg]
    cek_len = GCM_BITS[enc] // 8
    if kw_bits is None:
        if jwe.encrypted_key:  # RFC 7516 §5.2 step 10: must be empty
            raise JoseError("direct key agreement with an encrypted key")
        cek = concat_kdf(z, enc, GCM_BITS[enc])
    else:
        if len(jwe.encrypted_key) != cek_len + 8:
            raise JoseError("wrapped key has the wrong length")
        cek = unwrap(concat_kdf(z, alg, kw_bits), jwe.encrypted_key)
    try:
        return AESGCM(cek).decrypt(jwe.iv, jwe.ciphertext + jwe.tag, jwe.protected)
    except InvalidTag:
        raise JoseError("AES-GCM tag mismatch") from None
