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
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
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
_IV_CHARS, _TAG_CHARS = 16, 22  # their only canonical unpadded base64url lengths
_ECDH = ec.ECDH()
# Bound once: each enum class attribute lookup costs about 0.1 µs per message.
_X962, _UNCOMPRESSED = Encoding.X962, PublicFormat.UncompressedPoint
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
    other = _other_info(alg_id, key_bits, apu, apv)
    if key_bits <= 256:  # one SHA-256 block: every key hatchway derives
        return hashlib.sha256(b"\x00\x00\x00\x01" + z + other).digest()[: key_bits // 8]
    rounds = -(-key_bits // 256)
    out = b"".join(
        hashlib.sha256(i.to_bytes(4, "big") + z + other).digest() for i in range(1, rounds + 1)
    )
    return out[: key_bits // 8]


@lru_cache(maxsize=64)
def _other_info(alg_id: str, key_bits: int, apu: bytes, apv: bytes) -> bytes:
    # Fixed per (alg, width): hatchway sends no apu/apv, so this is a handful.
    alg = alg_id.encode()
    return (
        len(alg).to_bytes(4, "big")
        + alg
        + len(apu).to_bytes(4, "big")
        + apu
        + len(apv).to_bytes(4, "big")
        + apv
        + key_bits.to_bytes(4, "big")
    )


def ecdh(private: AgreePrivate, public: AgreePublic) -> bytes:
    """The shared secret Z; X25519's all-zero output (small-order point) fails."""
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
        public, ec.EllipticCurvePublicKey
    ):
        return agree("P-256", private, public)
    if isinstance(private, x25519.X25519PrivateKey) and isinstance(public, x25519.X25519PublicKey):
        return agree("X25519", private, public)
    raise JoseError("key agreement: mismatched key types")


def agree(crv: str, private: Any, public: Any) -> bytes:
    """``ecdh`` dispatched on the curve name the caller already holds.

    No ``isinstance`` on the key ABCs (about 0.5 µs each): ``cryptography``
    itself raises ``TypeError`` for a key of the wrong type or curve family.
    """
    try:
        if crv == "P-256":
            z: bytes = private.exchange(_ECDH, public)
            return z
        if crv == "X25519":
            z = private.exchange(public)
            return z
    except (ValueError, TypeError) as exc:
        raise JoseError(f"key agreement failed: {exc}") from None
    raise JoseError("key agreement: unsupported curve")


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
        return ephemeral("X25519", random)
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return ephemeral("P-256", random)
    raise JoseError("unsupported recipient key")


def ephemeral(crv: str, random: Callable[[int], bytes]) -> AgreePrivate:
    """An ephemeral key on ``crv`` ("P-256" or "X25519")."""
    if crv == "P-256":
        if random is system_random:
            # Same OS CSPRNG, drawn by OpenSSL's DRBG: keygen skips the extra
            # validation pass of derive_private_key (about 15 µs per message).
            return ec.generate_private_key(P256)
        # 64 extra bits make the modular bias negligible (FIPS 186-4 §B.4.1).
        scalar = int.from_bytes(random(40), "big") % (P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, P256)
    if crv == "X25519":
        return x25519.X25519PrivateKey.from_private_bytes(random(32))
    raise JoseError("unsupported recipient curve")


def public_to_epk(public: AgreePublic) -> str:
    """RFC 7518 §6.2.1 / RFC 8037 §2 public JWK members as compact JSON."""
    crv = "X25519" if isinstance(public, x25519.X25519PublicKey) else "P-256"
    return _epk_json(crv, public).decode()


def _epk_json(crv: str, public: Any) -> bytes:
    # Built by hand: base64url needs no JSON escaping, and this runs per message.
    if crv == "X25519":
        return b'{"kty":"OKP","crv":"X25519","x":"' + b64e(public.public_bytes_raw()) + b'"}'
    point = public.public_bytes(_X962, _UNCOMPRESSED)
    return (
        b'{"kty":"EC","crv":"P-256","x":"'
        + b64e(point[1:33])
        + b'","y":"'
        + b64e(point[33:])
        + b'"}'
    )


_EC_EPK = frozenset({"kty", "crv", "x", "y"})
_OKP_EPK = frozenset({"kty", "crv", "x"})


def epk_to_public(epk: object, crv: str) -> AgreePublic:
    """Parse ``epk`` as a *public* key on ``crv``; anything else is rejected.

    A private member, an extra member or a point off the curve would each let a
    sender steer the key agreement (invalid-curve attacks, RFC 8725 §3.4).
    """
    try:
        if crv == "P-256" and isinstance(epk, dict):
            if epk.keys() != _EC_EPK or epk["kty"] != "EC" or epk["crv"] != crv:
                raise JoseError("epk: wrong members for P-256")
            x, y = _coord(epk["x"]), _coord(epk["y"])
            return ec.EllipticCurvePublicKey.from_encoded_point(P256, b"\x04" + x + y)
        if crv == "X25519" and isinstance(epk, dict):
            if epk.keys() != _OKP_EPK or epk["kty"] != "OKP" or epk["crv"] != crv:
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
# ``sign`` and ``verify`` dispatch on ``alg`` alone: ``cryptography`` raises
# ``TypeError`` when the key is of the other type, which is cheaper than
# ``isinstance`` against its key ABCs and fails just as closed.


def sign(alg: str, key: SignPrivate, data: bytes, *, hedged: bool = False) -> bytes:
    """Raw JWS signature; ``hedged`` picks OpenSSL's nonces over RFC 6979."""
    try:
        if alg == "ES256":
            der = key.sign(data, _ECDSA if hedged else _ECDSA_DETERMINISTIC)  # type: ignore[call-arg]
            if not isinstance(key.curve, ec.SECP256R1):  # type: ignore[union-attr]
                raise TypeError
            # Our own OpenSSL's DER, SEQUENCE { INTEGER r, INTEGER s }: on P-256
            # each INTEGER is 1..33 bytes, so every length is one byte. Slicing
            # it is 4× cheaper than decode_dss_signature + int.to_bytes, and
            # tests pin it to them.
            n = der[3]
            return der[4 : 4 + n][-32:].rjust(32, b"\0") + der[6 + n :][-32:].rjust(32, b"\0")
        if alg == "EdDSA":
            return key.sign(data)  # type: ignore[call-arg]
    except TypeError:
        pass  # wrong key type, or an EC key not on P-256
    raise JoseError("sign: algorithm does not match key")


def verify(alg: str, key: SignPublic, data: bytes, sig: bytes) -> None:
    """Verify a JWS signature; the key's type must match ``alg``."""
    try:
        if alg == "ES256":
            if len(sig) != 64:
                raise JoseError("ES256 signature is not 64 bytes")
            # R and S as DER INTEGERs (X.690 §8.3.2): minimal, with a zero byte
            # in front of a set top bit; at most 33 bytes, so lengths take one
            # byte. Tests pin this to encode_dss_signature at a third of its
            # cost, and OpenSSL rejects any DER it would not itself produce.
            r, s = sig[:32].lstrip(b"\0") or b"\0", sig[32:].lstrip(b"\0") or b"\0"
            if r[0] & 0x80:
                r = b"\0" + r
            if s[0] & 0x80:
                s = b"\0" + s
            der = bytes((0x30, len(r) + len(s) + 4, 2, len(r))) + r + bytes((2, len(s))) + s
            key.verify(der, data, _ECDSA)  # type: ignore[call-arg]
            return
        if alg == "EdDSA":
            key.verify(sig, data)  # type: ignore[call-arg]
            return
    except InvalidSignature:
        raise JoseError("bad signature") from None
    except TypeError:
        pass
    raise JoseError("verify: algorithm does not match key")


@lru_cache(maxsize=256)
def jws_header(alg: str, kid: str, typ: str) -> bytes:
    """The encoded protected header of hatchway's JWS: one per sender and kind."""
    return b64e(dumps({"alg": str(alg), "kid": kid, "typ": str(typ)}))


def jws_compact(
    encoded_header: bytes, alg: str, payload: bytes, key: SignPrivate, *, hedged: bool = False
) -> bytes:
    """RFC 7515 §5.1 compact serialization under an already encoded header."""
    signing_input = encoded_header + b"." + b64e(payload)
    return signing_input + b"." + b64e(sign(alg, key, signing_input, hedged=hedged))


def jws_encode(
    header: Mapping[str, str], payload: bytes, key: SignPrivate, *, hedged: bool = False
) -> bytes:
    """RFC 7515 §5.1 compact serialization."""
    return jws_compact(b64e(dumps(dict(header))), header["alg"], payload, key, hedged=hedged)


class JwsParts(NamedTuple):
    header: Mapping[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes


def jws_parse(token: bytes, members: frozenset[str] = JWS_MEMBERS) -> JwsParts:
    """RFC 7515 §5.2 steps 1-7 with a header-member allow-list."""
    parts = token.split(b".")
    if len(parts) != 3:
        raise JoseError("JWS must have exactly 3 parts")
    head, payload, sig = parts
    try:
        if len(head) <= 512:
            header: Mapping[str, Any] = _cached_header(head, members)
        else:
            header = _header(head, members)
        return JwsParts(header, token[: len(head) + 1 + len(payload)], b64d(payload), b64d(sig))
    except CodecError as exc:
        raise JoseError(f"JWS encoding: {exc}") from None


@lru_cache(maxsize=512)
def _cached_header(segment: bytes, members: frozenset[str]) -> Mapping[str, Any]:
    # Inner headers repeat per sender and kind; the cache is bounded in count
    # and entry size, and holds read-only views so no caller can poison it.
    return MappingProxyType(_header(segment, members))


def _header(segment: bytes, members: frozenset[str], *, decoded: bool = False) -> dict[str, Any]:
    header = loads_object(segment if decoded else b64d(segment))
    unknown = header.keys() - members
    if unknown:
        # Covers crit, zip, jku, jwk, x5u, x5c, x5t, b64 ...: we implement none.
        raise JoseError(f"header members not allowed: {sorted(unknown)}")
    if not isinstance(header.get("alg"), str):
        raise JoseError("header alg missing")
    return header


# --- JWE -----------------------------------------------------------------------


@lru_cache(maxsize=256)
def jwe_header_prefix(alg: str, enc: str, kid: str) -> bytes:
    """hatchway's JWE header up to the ``epk`` value: one per recipient key."""
    head = {"alg": str(alg), "enc": str(enc), "kid": kid, "cty": "JWT"}
    return dumps(head)[:-1] + b',"epk":'


def jwe_encode(
    alg: str,
    enc: str,
    kid: str,
    crv: str,
    plaintext: bytes,
    recipient: AgreePublic,
    ephemeral: AgreePrivate,
    random: Callable[[int], bytes],
) -> bytes:
    """RFC 7516 §5.1 with ECDH-ES[+AxxxKW] (RFC 7518 §4.6) and AES-GCM on ``crv``."""
    cek_bits, kw_bits = GCM_BITS.get(enc), KW_BITS.get(alg, 0)
    if cek_bits is None or kw_bits == 0:
        raise JoseError(f"unsupported alg/enc: {alg}/{enc}")
    z = agree(crv, ephemeral, recipient)
    epk = _epk_json(crv, ephemeral.public_key())
    protected = b64e(jwe_header_prefix(alg, enc, kid) + epk + b"}")
    if kw_bits is None:
        cek, encrypted_key = concat_kdf(z, enc, cek_bits), b""
    else:
        cek = random(cek_bits // 8)
        encrypted_key = b64e(wrap(concat_kdf(z, alg, kw_bits), cek))
    iv = random(_IV_LEN)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected)
    # 12 bytes are exactly 16 characters, so IV and ciphertext encode in one pass.
    iv_ct = b64e(iv + sealed[:-_TAG_LEN])
    return b".".join(
        (protected, encrypted_key, iv_ct[:_IV_CHARS], iv_ct[_IV_CHARS:], b64e(sealed[-_TAG_LEN:]))
    )


class JweParts(NamedTuple):
    header: dict[str, Any]
    protected: bytes  # the received ASCII segment: it is the AAD (RFC 7516 §5.2 step 14)
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes


# The exact header ``jwe_encode`` writes. A match is read without the generic
# JSON parser: the member names are fixed and distinct (no duplicates), values
# are printable ASCII without quote or backslash (no escapes), so it means the
# same to every JSON parser. Anything else takes the strict generic path.
_STR = r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
_B64_32 = r'"([A-Za-z0-9_-]{43})"'
_OWN_JWE_HEADER = re.compile(
    r'\{"alg":' + _STR + r',"enc":' + _STR + r',"kid":' + _STR + r',"cty":"JWT","epk":'
    r'\{"kty":"(?:EC","crv":"(P-256)","x":'
    + _B64_32
    + r',"y":'
    + _B64_32
    + r'|OKP","crv":"(X25519)","x":'
    + _B64_32
    + r")\}\}",
    re.ASCII,
)
_OWN_JWE_MEMBERS = frozenset({"alg", "enc", "kid", "cty", "epk"})


def _jwe_header(segment: bytes, members: frozenset[str]) -> dict[str, Any]:
    raw = b64d(segment)
    # latin-1 never fails; a match proves the text was printable ASCII anyway.
    own = _OWN_JWE_HEADER.fullmatch(raw.decode("latin-1")) if members >= _OWN_JWE_MEMBERS else None
    if own is None:
        return _header(raw, members, decoded=True)
    alg, enc, kid, ec_crv, x, y, okp_crv, okp_x = own.groups()
    epk = (
        {"kty": "EC", "crv": ec_crv, "x": x, "y": y}
        if ec_crv
        else {"kty": "OKP", "crv": okp_crv, "x": okp_x}
    )
    return {"alg": alg, "enc": enc, "kid": kid, "cty": "JWT", "epk": epk}


def jwe_parse(token: bytes, members: frozenset[str] = JWE_MEMBERS) -> JweParts:
    """RFC 7516 §5.2 steps 1-5 with a header-member allow-list."""
    parts = token.split(b".")
    if len(parts) != 5:
        raise JoseError("JWE must have exactly 5 parts")
    protected, ek, iv, ct, tag = parts
    # Any other length is wrong before decoding. A 16-character IV ends on a
    # 4-character boundary, so IV and ciphertext decode in one strict pass
    # exactly as they would apart.
    if len(iv) != _IV_CHARS or len(tag) != _TAG_CHARS:
        raise JoseError("bad IV or tag length")
    try:
        header = _jwe_header(protected, members)
        iv_ct, tag = b64d(iv + ct), b64d(tag)
        ek = b64d(ek) if ek else b""
    except CodecError as exc:
        raise JoseError(f"JWE encoding: {exc}") from None
    if not isinstance(header.get("enc"), str):
        raise JoseError("header enc missing")
    return JweParts(header, protected, ek, iv_ct[:_IV_LEN], iv_ct[_IV_LEN:], tag)


def jwe_decrypt(
    jwe: JweParts,
    private: AgreePrivate,
    crv: str,
    algs: frozenset[str],
    encs: frozenset[str],
) -> bytes:
    """RFC 7516 §5.2 steps 6-16 for ECDH-ES[+AxxxKW] and AES-GCM."""
    header = jwe.header
    alg, enc = header["alg"], header["enc"]
    if alg not in algs or alg not in KW_BITS or enc not in encs or enc not in GCM_BITS:
        raise JoseError(f"alg/enc not allowed: {alg}/{enc}")
    z = agree(crv, private, epk_to_public(header.get("epk"), crv))
    kw_bits = KW_BITS[alg]
    cek_bits = GCM_BITS[enc]
    if kw_bits is None:
        if jwe.encrypted_key:  # RFC 7516 §5.2 step 10: must be empty
            raise JoseError("direct key agreement with an encrypted key")
        cek = concat_kdf(z, enc, cek_bits)
    else:
        if len(jwe.encrypted_key) != cek_bits // 8 + 8:
            raise JoseError("wrapped key has the wrong length")
        cek = unwrap(concat_kdf(z, alg, kw_bits), jwe.encrypted_key)
    try:
        return AESGCM(cek).decrypt(jwe.iv, jwe.ciphertext + jwe.tag, jwe.protected)
    except InvalidTag:
        raise JoseError("AES-GCM tag mismatch") from None
