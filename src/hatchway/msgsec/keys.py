"""Message-security keys and their JWK form.

JWK per RFC 7517 §4 with RFC 7518 §6.2 (EC: P-256) and RFC 8037 §2 (OKP: Ed25519,
X25519). Key ids default to the RFC 7638 §3 JWK thumbprint (SHA-256, base64url).

Signing keys are P-256 (ES256) or Ed25519 (EdDSA); key-agreement keys are P-256
or X25519. ``from_jwk`` is strict because JWKs cross the enrolment boundary: wrong
``kty``/``crv``, points off the curve (``cryptography`` checks), private members
in a public key, a private ``d`` that does not match ``x``/``y``, unknown members
and a ``use``/``alg``/``key_ops`` that contradicts the key's job are all rejected
with ``ValueError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hatchway.msgsec import _jose
from hatchway.msgsec._codec import CodecError, b64d, b64e, dumps
from hatchway.msgsec.algorithms import KeyAlg, SignAlg

__all__ = [
    "DecryptionKey",
    "EncryptionKey",
    "SigningKey",
    "VerifyingKey",
    "generate_decryption_key",
    "generate_signing_key",
    "jwk_set",
]

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_META_MEMBERS = frozenset({"kid", "use", "alg", "key_ops"})
_SIG_OPS = frozenset({"sign", "verify"})
_ENC_OPS = frozenset({"deriveKey", "deriveBits"})
CURVES = ("P-256", "X25519")


# --- raw key <-> JWK members ----------------------------------------------------


def _public_members(key: Any) -> dict[str, str]:
    """RFC 7638 §3.2 required members, which are also the whole public JWK."""
    if isinstance(key, ed25519.Ed25519PublicKey | x25519.X25519PublicKey):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "X25519"
        return {"crv": crv, "kty": "OKP", "x": b64e(key.public_bytes_raw()).decode()}
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64e(point[1:33]).decode(),
        "y": b64e(point[33:]).decode(),
    }


def thumbprint(public_key: Any) -> str:
    """RFC 7638 §3: SHA-256 over the sorted, whitespace-free required members."""
    members = _public_members(public_key)
    canonical = dumps({k: members[k] for k in sorted(members)})
    return b64e(hashlib.sha256(canonical).digest()).decode()


def _b64_fixed(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"JWK member {name!r} missing or not a string")
    try:
        raw = b64d(value.encode("ascii"))
    except (CodecError, UnicodeEncodeError):
        raise ValueError(f"JWK member {name!r} is not base64url") from None
    if len(raw) != size:
        raise ValueError(f"JWK member {name!r} must be {size} bytes")
    return raw


def _load(jwk: Mapping[str, Any], *, private: bool) -> tuple[str, Any]:
    """Return ``(crv, key)`` for an EC/OKP JWK, private or public as asked."""
    if not isinstance(jwk, Mapping) or not all(isinstance(k, str) for k in jwk):
        raise ValueError("JWK must be a JSON object")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    shape = {"kty", "crv", "x"} | ({"y"} if kty == "EC" else set())
    extra = jwk.keys() - shape - _META_MEMBERS - ({"d"} if private else set())
    if extra & _PRIVATE_MEMBERS:
        raise ValueError("private members in a public JWK")
    if extra or not shape <= jwk.keys() or (private and "d" not in jwk):
        raise ValueError(f"JWK members do not fit kty={kty!r}: {sorted(extra)}")
    x = _b64_fixed(jwk, "x", 32)
    if kty == "EC" and crv == "P-256":
        public: Any = ec.EllipticCurvePublicKey.from_encoded_point(
            _jose.P256, b"\x04" + x + _b64_fixed(jwk, "y", 32)
        )
        if not private:
            return crv, public
        d = int.from_bytes(_b64_fixed(jwk, "d", 32), "big")
        key: Any = ec.derive_private_key(d, _jose.P256)
    elif kty == "OKP" and crv in ("Ed25519", "X25519"):
        cls: Any = ed25519 if crv == "Ed25519" else x25519
        pub_cls = cls.Ed25519PublicKey if crv == "Ed25519" else cls.X25519PublicKey
        public = pub_cls.from_public_bytes(x)
        if not private:
            return crv, public
        priv_cls = cls.Ed25519PrivateKey if crv == "Ed25519" else cls.X25519PrivateKey
        key = priv_cls.from_private_bytes(_b64_fixed(jwk, "d", 32))
    else:
        raise ValueError(f"unsupported kty/crv {kty!r}/{crv!r}")
    if _public_members(key.public_key()) != _public_members(public):
        raise ValueError("JWK private part does not match its public part")
    return crv, key


def _kid(jwk: Mapping[str, Any], key: Any) -> str:
    kid = jwk.get("kid")
    if kid is None:
        return thumbprint(key)
    if not isinstance(kid, str) or not 0 < len(kid) <= 256:
        raise ValueError("JWK kid must be a non-empty string of at most 256 characters")
    return kid


def _check_meta(jwk: Mapping[str, Any], use: str, ops: frozenset[str], op: str) -> None:
    if jwk.get("use", use) != use:
        raise ValueError(f"JWK use must be {use!r}")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (
        not isinstance(key_ops, list) or op not in key_ops or not set(key_ops) <= ops
    ):
        raise ValueError(f"JWK key_ops must allow {op!r} and nothing outside {sorted(ops)}")


_SIGN_CURVE = {SignAlg.ES256: "P-256", SignAlg.EDDSA: "Ed25519"}


def _sign_alg(jwk: Mapping[str, Any], crv: str) -> SignAlg:
    alg = next(a for a, c in _SIGN_CURVE.items() if c == crv)
    if jwk.get("alg", alg.value) != alg.value:
        raise ValueError(f"JWK alg does not match a {crv} signing key")
    return alg


# --- the four key types ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public signing key: verifies the inner JWS of a peer's messages."""

    kid: str
    alg: SignAlg
    key: _jose.SignPublic = field(repr=False)

    def to_jwk(self) -> dict[str, Any]:
        members = _public_members(self.key)
        return {**members, "kid": self.kid, "use": "sig", "alg": self.alg.value}

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerifyingKey:
        crv, key = _load(jwk, private=False)
        if crv not in _SIGN_CURVE.values():
            raise ValueError(f"{crv} is not a signing curve")
        _check_meta(jwk, "sig", _SIG_OPS, "verify")
        return cls(_kid(jwk, key), _sign_alg(jwk, crv), key)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private signing key. Private keys compare by identity only."""

    kid: str
    alg: SignAlg
    key: _jose.SignPrivate = field(repr=False, compare=False)

    def public(self) -> VerifyingKey:
        return VerifyingKey(self.kid, self.alg, self.key.public_key())

    def to_jwk(self, *, private: bool = True) -> dict[str, Any]:
        jwk = self.public().to_jwk()
        if private:
            jwk["d"] = b64e(_private_bytes(self.key)).decode()
        return jwk

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        crv, key = _load(jwk, private=True)
        if crv not in _SIGN_CURVE.values():
            raise ValueError(f"{crv} is not a signing curve")
        _check_meta(jwk, "sig", _SIG_OPS, "sign")
        return cls(_kid(jwk, key.public_key()), _sign_alg(jwk, crv), key)


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """A public key-agreement key: the recipient of the outer JWE."""

    kid: str
    crv: str
    key: _jose.AgreePublic = field(repr=False)

    def to_jwk(self) -> dict[str, Any]:
        return {**_public_members(self.key), "kid": self.kid, "use": "enc"}

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> EncryptionKey:
        crv, key = _load(jwk, private=False)
        _check_enc(jwk, crv, "deriveKey")
        return cls(_kid(jwk, key), crv, key)


@dataclass(frozen=True, slots=True)
class DecryptionKey:
    """A private key-agreement key. Private keys compare by identity only."""

    kid: str
    crv: str
    key: _jose.AgreePrivate = field(repr=False, compare=False)

    def public(self) -> EncryptionKey:
        return EncryptionKey(self.kid, self.crv, self.key.public_key())

    def to_jwk(self, *, private: bool = True) -> dict[str, Any]:
        jwk = self.public().to_jwk()
        if private:
            jwk["d"] = b64e(_private_bytes(self.key)).decode()
        return jwk

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> DecryptionKey:
        crv, key = _load(jwk, private=True)
        _check_enc(jwk, crv, "deriveKey")
        return cls(_kid(jwk, key.public_key()), crv, key)


def _check_enc(jwk: Mapping[str, Any], crv: str, op: str) -> None:
    if crv not in CURVES:
        raise ValueError(f"{crv} is not a key-agreement curve")
    if "alg" in jwk and jwk["alg"] not in {a.value for a in KeyAlg}:
        raise ValueError("JWK alg is not an allowed key-agreement algorithm")
    _check_meta(jwk, "enc", _ENC_OPS, op)


def _private_bytes(key: Any) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return int(key.private_numbers().private_value).to_bytes(32, "big")
    raw: bytes = key.private_bytes_raw()
    return raw


# --- generation -----------------------------------------------------------------


def generate_signing_key(
    alg: SignAlg = SignAlg.ES256,
    *,
    kid: str | None = None,
    random: Callable[[int], bytes] | None = None,
) -> SigningKey:
    """A fresh signing key; ``random`` (if given) makes it reproducible for tests."""
    alg = SignAlg(alg)
    key: _jose.SignPrivate
    if alg is SignAlg.ES256:
        key = (
            ec.generate_private_key(_jose.P256)
            if random is None
            else ec.derive_private_key(_scalar(random), _jose.P256)
        )
    else:
        key = (
            ed25519.Ed25519PrivateKey.generate()
            if random is None
            else ed25519.Ed25519PrivateKey.from_private_bytes(random(32))
        )
    return SigningKey(kid or thumbprint(key.public_key()), alg, key)


def generate_decryption_key(
    crv: str = "P-256", *, kid: str | None = None, random: Callable[[int], bytes] | None = None
) -> DecryptionKey:
    """A fresh key-agreement key on ``"P-256"`` or ``"X25519"``."""
    key: _jose.AgreePrivate
    if crv == "P-256":
        key = (
            ec.generate_private_key(_jose.P256)
            if random is None
            else ec.derive_private_key(_scalar(random), _jose.P256)
        )
    elif crv == "X25519":
        key = (
            x25519.X25519PrivateKey.generate()
            if random is None
            else x25519.X25519PrivateKey.from_private_bytes(random(32))
        )
    else:
        raise ValueError(f"unsupported key-agreement curve {crv!r}")
    return DecryptionKey(kid or thumbprint(key.public_key()), crv, key)


def _scalar(random: Callable[[int], bytes]) -> int:
    return int.from_bytes(random(40), "big") % (_jose.P256_ORDER - 1) + 1


AnyKey = SigningKey | VerifyingKey | DecryptionKey | EncryptionKey


def jwk_set(*keys: AnyKey) -> dict[str, list[dict[str, Any]]]:
    """RFC 7517 §5 JWK Set of the *public* halves, e.g. for a ``jwks_uri``."""
    out = []
    for k in keys:
        public = k.public() if isinstance(k, SigningKey | DecryptionKey) else k
        out.append(public.to_jwk())
    return {"keys": out}
