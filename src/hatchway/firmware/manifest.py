"""The firmware manifest: a compact JWS signed by the offline firmware key.

Structure (RFC 7515 §3.1 compact JWS, RFC 8037 §3.1 EdDSA), mapped to the SUIT
information model (RFC 9124 §3) in docs/firmware.md:

* protected header exactly ``{"alg": "EdDSA", "kid": <RFC 7638 thumbprint>,
  "typ": "hatchway-fw-manifest+jwt"}``; any other member (``jwk``, ``jku``,
  ``x5u``, ``crit`` ...) is refused (RFC 8725 §3.10, §3.11), so the key always
  comes from the device's trust store, never from the token;
* payload, a JSON object with exactly the members of ``Manifest`` below. In RFC
  9124 §3 terms: ``mv`` (Version ID of the Manifest Structure), ``seq``
  (Monotonic Sequence Number), ``class`` (Class ID, naming the vendor too),
  ``version``, ``size`` (Size, §3.14), ``sha256`` (Payload Digests, §3.13),
  ``chunk_size`` and ``chunks`` (a digest per fixed 64 KiB chunk, so each chunk
  is checked on arrival), ``iat``/``exp`` (Expiration Time, against freeze
  attacks), optional ``min_version`` (Required Image Version List, as a minimum)
  and ``rotate`` (a one-step Delegation Chain: a key-rotation statement).

Verification is split in two, with the size cap first of all:
``verify_manifest`` decides authenticity (opaque ``InvalidManifest`` for every
parse, header and signature failure; typed refusals for trust-store decisions),
and ``hatchway.firmware.device.check_manifest`` applies the device's policy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.firmware.errors import InvalidManifest, ManifestRefused, RefusalReason
from hatchway.firmware.keys import FIRMWARE_ALG, KeyStatus, TrustStore, load_public_jwk
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import CodecError, b64d, b64e, dumps, loads_object
from hatchway.msgsec.keys import SigningKey, VerifyingKey

__all__ = [
    "CHUNK_SIZE",
    "MANIFEST_TYP",
    "MAX_CHUNKS",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "Rotation",
    "digest_image",
    "parse_version",
    "sign_manifest",
    "verify_manifest",
]

MANIFEST_TYP = "hatchway-fw-manifest+jwt"
ROTATION_TYP = "hatchway-fw-rotate+jwt"
MANIFEST_FORMAT = 1
#: Fixed chunk size, 64 KiB: a 4 MiB image is 64 chunks and a 2.7 KB hash list,
#: and a chunk fits one HTTP response a constrained device can buffer whole.
CHUNK_SIZE = 65536
#: 4096 chunks: images up to 256 MiB.
MAX_CHUNKS = 4096
#: Checked before any parsing. 4096 digests of 43 characters in base64url JSON
#: come to about 251 KB; the rest is headroom for the header and a rotation.
MAX_MANIFEST_BYTES = 320 * 1024
_MAX_SEQ = 2**53 - 1  # an integer every JSON parser reads exactly
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
_CLASS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}", re.ASCII)
_DIGEST_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]", re.ASCII)  # canonical 32 bytes
_REQUIRED = frozenset(
    {"mv", "seq", "class", "version", "size", "sha256", "chunk_size", "chunks", "iat", "exp"}
)
_OPTIONAL = frozenset({"min_version", "rotate"})


def parse_version(text: str) -> tuple[int, ...]:
    """``MAJOR[.MINOR[.PATCH[.BUILD]]]``, numeric only, compared with missing parts as 0.

    SemVer pre-release tags are left out on purpose: their ordering rules
    (SemVer 2.0.0 §11) are a frequent source of disagreement between a signer and
    a device, and a ``min_version`` check must mean the same on both.
    """
    if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
        raise ValueError(f"version {text!r} is not numeric MAJOR[.MINOR[.PATCH[.BUILD]]]")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


@dataclass(frozen=True, slots=True)
class Rotation:
    """A key-rotation statement: the old key (the manifest's signer) names its successor.

    ``proof`` is a JWS by the *new* key over ``{"old", "new", "seq"}``: a device
    learns a successor only if its holder consented, so a typo cannot brick the
    fleet by rotating to a key nobody has. ``old_until`` ends the overlap in which
    devices still accept the old key (as ``retired``).
    """

    new_key: VerifyingKey
    old_until: int
    proof: str

    def to_claims(self) -> dict[str, Any]:
        return {"jwk": self.new_key.to_jwk(), "old_until": self.old_until, "proof": self.proof}


@dataclass(frozen=True, slots=True)
class Manifest:
    """The signed claims of one firmware image, as the device acts on them."""

    sequence: int
    device_class: str
    version: str
    size: int
    sha256: bytes
    chunks: tuple[bytes, ...]
    issued_at: int
    expires_at: int
    min_version: str | None = None
    rotation: Rotation | None = None
    chunk_size: int = CHUNK_SIZE
    kid: str = field(default="", compare=False)  # the signer, filled in by verification

    def __post_init__(self) -> None:
        _check(type(self.sequence) is int and 0 < self.sequence <= _MAX_SEQ, "seq out of range")
        _check(bool(_CLASS_RE.fullmatch(self.device_class)), "class is not a class identifier")
        parse_version(self.version)
        if self.min_version is not None:
            parse_version(self.min_version)
        _check(self.chunk_size == CHUNK_SIZE, f"chunk_size must be {CHUNK_SIZE}")
        _check(type(self.size) is int and self.size > 0, "size must be a positive integer")
        count = -(-self.size // self.chunk_size)
        _check(count <= MAX_CHUNKS, f"image larger than {MAX_CHUNKS} chunks")
        _check(len(self.chunks) == count, "chunk list does not match size")
        _check(all(len(c) == 32 for c in (self.sha256, *self.chunks)), "digests are SHA-256")
        _check(type(self.issued_at) is int and type(self.expires_at) is int, "iat/exp integers")
        _check(0 <= self.issued_at < self.expires_at <= _MAX_SEQ, "need 0 <= iat < exp")

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    def chunk_length(self, index: int) -> int:
        """Exact length of chunk ``index``: all full but the last."""
        if not 0 <= index < self.chunk_count:
            raise IndexError(index)
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.chunk_count - 1)

    def to_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "mv": MANIFEST_FORMAT,
            "seq": self.sequence,
            "class": self.device_class,
            "version": self.version,
            "size": self.size,
            "sha256": b64e(self.sha256).decode(),
            "chunk_size": self.chunk_size,
            "chunks": [b64e(c).decode() for c in self.chunks],
            "iat": self.issued_at,
            "exp": self.expires_at,
        }
        if self.min_version is not None:
            claims["min_version"] = self.min_version
        if self.rotation is not None:
            claims["rotate"] = self.rotation.to_claims()
        return claims

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], kid: str = "") -> Manifest:
        """Strict: exactly the known members, each of its exact type; ``ValueError`` else."""
        keys = set(claims)
        _check(keys >= _REQUIRED and not keys - _REQUIRED - _OPTIONAL, "manifest members")
        _check(claims["mv"] == MANIFEST_FORMAT and type(claims["mv"]) is int, "unknown format")
        chunks = claims["chunks"]
        _check(isinstance(chunks, list) and len(chunks) <= MAX_CHUNKS, "chunks must be a list")
        _check(isinstance(claims["class"], str), "class must be a string")
        # An optional member is absent or has a value: ``null`` would be a second
        # spelling of the same manifest, which a signer and a device could read apart.
        _check(all(claims[k] is not None for k in keys & _OPTIONAL), "optional member is null")
        rotate = claims.get("rotate")
        return cls(
            sequence=claims["seq"],
            device_class=claims["class"],
            version=claims["version"],
            size=claims["size"],
            sha256=_digest(claims["sha256"]),
            chunks=tuple(_digest(c) for c in chunks),
            issued_at=claims["iat"],
            expires_at=claims["exp"],
            min_version=claims.get("min_version"),
            rotation=None if rotate is None else _rotation(rotate),
            chunk_size=claims["chunk_size"],
            kid=kid,
        )


def digest_image(chunks: Iterable[bytes]) -> tuple[int, bytes, tuple[bytes, ...]]:
    """``(size, sha256, chunk digests)`` over an image given as ``CHUNK_SIZE`` pieces.

    Every piece but the last must be exactly ``CHUNK_SIZE`` bytes; this is what a
    signer streams from a file, so a 256 MiB image is never held in memory.
    """
    whole = hashlib.sha256()
    digests: list[bytes] = []
    size, short = 0, False
    for piece in chunks:
        if short or not 0 < len(piece) <= CHUNK_SIZE:
            raise ValueError("image pieces must be CHUNK_SIZE bytes except the last")
        short = len(piece) < CHUNK_SIZE
        whole.update(piece)
        digests.append(hashlib.sha256(piece).digest())
        size += len(piece)
    if not digests:
        raise ValueError("the image is empty")
    return size, whole.digest(), tuple(digests)


def split_chunks(image: bytes) -> list[bytes]:
    return [image[i : i + CHUNK_SIZE] for i in range(0, len(image), CHUNK_SIZE)]


def sign_manifest(manifest: Manifest, key: SigningKey) -> bytes:
    """The compact JWS of ``manifest`` under the firmware ``key`` (Ed25519 only)."""
    if key.alg is not FIRMWARE_ALG:
        raise ValueError("manifests are signed with an Ed25519 firmware key")
    header = {"alg": FIRMWARE_ALG.value, "kid": key.kid, "typ": MANIFEST_TYP}
    return _jose.jws_encode(header, dumps(manifest.to_claims()), key.key)


def rotation_proof(new_key: SigningKey, old_kid: str, sequence: int) -> str:
    """The new key's consent to succeed ``old_kid``, bound to one manifest sequence."""
    header = {"alg": FIRMWARE_ALG.value, "kid": new_key.kid, "typ": ROTATION_TYP}
    payload = dumps({"old": old_kid, "new": new_key.kid, "seq": sequence})
    return _jose.jws_encode(header, payload, new_key.key).decode("ascii")


def verify_manifest(
    token: bytes | str, trust: TrustStore, now: float, *, max_size: int = MAX_MANIFEST_BYTES
) -> Manifest:
    """Authenticity only: size cap, header allow-list, trusted key, signature, schema.

    Raises ``ManifestRefused`` (``TOO_LARGE``, ``UNTRUSTED_KEY``, ``REVOKED_KEY``,
    ``RETIRED_KEY``, ``BAD_ROTATION``) or the opaque ``InvalidManifest``.
    """
    raw = _bounded(token, max_size)
    try:
        jws = _jose.jws_parse(raw, _HEADER_MEMBERS)
        header = jws.header
        kid = header.get("kid")
        if header.get("alg") != FIRMWARE_ALG.value or header.get("typ") != MANIFEST_TYP:
            raise InvalidManifest("alg or typ not allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidManifest("kid missing")
    except _jose.JoseError as exc:
        raise InvalidManifest(str(exc)) from None
    key = trust.verifying_key(kid, now)  # typed refusal: the device reports it
    try:
        _jose.verify(FIRMWARE_ALG.value, key.key, jws.signing_input, jws.signature)
        manifest = Manifest.from_claims(loads_object(jws.payload), kid=kid)
    except (_jose.JoseError, CodecError, ValueError, TypeError, KeyError) as exc:
        raise InvalidManifest(f"{type(exc).__name__}: {exc}") from None
    if manifest.rotation is not None:
        _check_rotation(manifest.rotation, kid, manifest.sequence)
        known = trust.get(manifest.rotation.new_key.kid)
        if known is not None and known.status is KeyStatus.REVOKED:
            # Refused now rather than failing later, after the image is installed.
            raise ManifestRefused(RefusalReason.BAD_ROTATION, "rotation to a revoked key")
    return manifest


def _check_rotation(rotation: Rotation, old_kid: str, sequence: int) -> None:
    new = rotation.new_key
    try:
        jws = _jose.jws_parse(rotation.proof.encode("ascii"), _HEADER_MEMBERS)
        h = jws.header
        expected = (FIRMWARE_ALG.value, new.kid, ROTATION_TYP)
        if (h.get("alg"), h.get("kid"), h.get("typ")) != expected:
            raise _jose.JoseError("rotation proof header")
        _jose.verify(FIRMWARE_ALG.value, new.key, jws.signing_input, jws.signature)
        if loads_object(jws.payload) != {"old": old_kid, "new": new.kid, "seq": sequence}:
            raise _jose.JoseError("rotation proof payload")
        if new.kid == old_kid:
            raise _jose.JoseError("rotation to the same key")
    except (_jose.JoseError, CodecError, UnicodeEncodeError) as exc:
        raise ManifestRefused(RefusalReason.BAD_ROTATION, str(exc)) from None


def _rotation(raw: object) -> Rotation:
    if not isinstance(raw, dict) or set(raw) != {"jwk", "old_until", "proof"}:
        raise ValueError("rotate members")
    until, proof = raw["old_until"], raw["proof"]
    _check(type(until) is int and 0 <= until <= _MAX_SEQ, "old_until must be an integer")
    _check(isinstance(proof, str) and len(proof) <= 1024, "proof must be a short string")
    return Rotation(load_public_jwk(raw["jwk"]), until, proof)


def _digest(value: object) -> bytes:
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise ValueError("digest encoding")
    return b64d(value.encode("ascii"))


def _bounded(token: object, max_size: int) -> bytes:
    # The cap comes first: nothing below runs on an oversized input.
    if isinstance(token, str):
        if len(token) > max_size:
            raise ManifestRefused(RefusalReason.TOO_LARGE, f"manifest over {max_size} bytes")
        if not token.isascii():
            raise InvalidManifest("manifest is not ASCII")
        return token.strip().encode("ascii")
    if isinstance(token, bytes | bytearray | memoryview):
        if len(token) > max_size:
            raise ManifestRefused(RefusalReason.TOO_LARGE, f"manifest over {max_size} bytes")
        return bytes(token).strip()
    raise InvalidManifest("manifest is not bytes or str")


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise ValueError(why)
