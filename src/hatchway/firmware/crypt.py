"""Image encryption per chunk, and the content key wrapped to one device (issue 9, step 2).

* Each chunk is sealed with AES-256-GCM (NIST SP 800-38D) under one random
  content key per published image: ``iv (12) || ciphertext || tag (16)``. The
  AAD is ``"hatchway-fw-chunk/1" || image SHA-256 || chunk index (4 bytes, big
  endian)``, so a chunk cannot be replayed at another index (reordering) or
  moved into another image; a failed tag means "fetch this chunk again".
  The IV is random from injected randomness; with at most 4096 chunks per key,
  the collision bound of SP 800-38D §8.3 is nowhere near.
* The content key reaches a device as a compact JWE (RFC 7516 §7.1) with
  ``alg`` ``ECDH-ES+A256KW`` and ``enc`` ``A256GCM`` (RFC 7518 §4.6, §5.3) to
  the device's P-256 or X25519 encryption key, built on the same primitives as
  the sealed messages (``hatchway.msgsec._jose``), so any JOSE library opens it.
  Its plaintext is ``{"k": <key>, "sha256": <image digest>}``: a key is bound to
  the image it decrypts, and the device checks that against the manifest.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hatchway.firmware.errors import ChunkRefused, InvalidManifest
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import CodecError, b64d, b64e, dumps, loads_object
from hatchway.msgsec.keys import DecryptionKey, EncryptionKey

__all__ = [
    "KEY_TYP",
    "ChunkCipher",
    "new_content_key",
    "unwrap_content_key",
    "wrap_content_key",
]

KEY_TYP = "hatchway-fw-key"
WRAP_ALG = "ECDH-ES+A256KW"
WRAP_ENC = "A256GCM"
MAX_WRAPPED_BYTES = 2048
_AAD_LABEL = b"hatchway-fw-chunk/1"
_IV, _TAG = 12, 16
_JWE_MEMBERS = frozenset({"alg", "enc", "kid", "epk", "typ"})


def new_content_key(random: Callable[[int], bytes]) -> bytes:
    return random(32)


class ChunkCipher:
    """Seals and opens the chunks of one image under its content key."""

    __slots__ = ("_aead", "_sha256")

    def __init__(self, content_key: bytes, image_sha256: bytes) -> None:
        if len(content_key) != 32 or len(image_sha256) != 32:
            raise ValueError("content key and image digest are 32 bytes")
        self._aead = AESGCM(content_key)
        self._sha256 = image_sha256

    def _aad(self, index: int) -> bytes:
        return _AAD_LABEL + self._sha256 + index.to_bytes(4, "big")

    def seal(self, index: int, chunk: bytes, random: Callable[[int], bytes]) -> bytes:
        if not 0 <= index < 2**32:
            raise ValueError("chunk index out of range")
        iv = random(_IV)
        return iv + self._aead.encrypt(iv, chunk, self._aad(index))

    def open(self, index: int, blob: bytes) -> bytes:
        """The plaintext of chunk ``index``, or ``ChunkRefused`` (fetch it again)."""
        if not 0 <= index < 2**32 or len(blob) < _IV + _TAG:
            raise ChunkRefused(index, "sealed chunk malformed")
        try:
            return self._aead.decrypt(blob[:_IV], blob[_IV:], self._aad(index))
        except InvalidTag:
            raise ChunkRefused(index, "chunk tag mismatch") from None


def wrap_content_key(
    content_key: bytes,
    image_sha256: bytes,
    recipient: EncryptionKey,
    random: Callable[[int], bytes],
    *,
    ephemeral: _jose.AgreePrivate | None = None,
) -> bytes:
    """A compact JWE carrying ``content_key`` to ``recipient``; ``ephemeral`` for KATs."""
    eph = _jose.ephemeral(recipient.crv, random) if ephemeral is None else ephemeral
    epk = loads_object(_jose.public_to_epk(eph.public_key()).encode())
    header = {"alg": WRAP_ALG, "enc": WRAP_ENC, "kid": recipient.kid, "typ": KEY_TYP, "epk": epk}
    protected = b64e(dumps(header))
    z = _jose.agree(recipient.crv, eph, recipient.key)
    cek = random(32)  # the JWE's own CEK, wrapped by the ECDH-derived KEK
    encrypted_key = _jose.wrap(_jose.concat_kdf(z, WRAP_ALG, 256), cek)
    plaintext = dumps({"k": b64e(content_key).decode(), "sha256": b64e(image_sha256).decode()})
    iv = random(_IV)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected)
    return b".".join(
        (protected, b64e(encrypted_key), b64e(iv), b64e(sealed[:-_TAG]), b64e(sealed[-_TAG:]))
    )


def unwrap_content_key(token: bytes | str, key: DecryptionKey, image_sha256: bytes) -> bytes:
    """The content key for the image with ``image_sha256``; opaque ``InvalidManifest`` else."""
    raw = token.encode("ascii", "replace") if isinstance(token, str) else bytes(token)
    if len(raw) > MAX_WRAPPED_BYTES:
        raise InvalidManifest("wrapped key too large")
    try:
        jwe = _jose.jwe_parse(raw.strip(), _JWE_MEMBERS)
        h = jwe.header
        if (h.get("alg"), h.get("enc"), h.get("typ")) != (WRAP_ALG, WRAP_ENC, KEY_TYP):
            raise _jose.JoseError("wrapped key header")
        if h.get("kid") != key.kid:
            raise _jose.JoseError("wrapped to another key")
        body = loads_object(
            _jose.jwe_decrypt(jwe, key.key, key.crv, frozenset({WRAP_ALG}), frozenset({WRAP_ENC}))
        )
        if set(body) != {"k", "sha256"} or not all(isinstance(v, str) for v in body.values()):
            raise _jose.JoseError("wrapped key body")
        content_key = b64d(body["k"].encode("ascii"))
        bound = b64d(body["sha256"].encode("ascii"))
    except (_jose.JoseError, CodecError, UnicodeEncodeError) as exc:
        raise InvalidManifest(str(exc)) from None
    if len(content_key) != 32 or not hmac.compare_digest(bound, image_sha256):
        raise InvalidManifest("wrapped key is not for this image")
    return content_key
