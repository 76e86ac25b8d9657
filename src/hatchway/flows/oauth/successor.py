"""The successor of a rotated refresh token, sealed under the token it replaced.

Why: a client that retries a refresh within the reuse interval must get the
*same* successor as its first attempt (one live token per family), but the store
keeps only SHA-256 digests of tokens. So the rotation stores the successor
encrypted with AES-256-GCM under ``HKDF-SHA256(presented token)``: only a caller
holding the presented token can open it, and a database dump (hashes and
ciphertexts, never a token) still yields no live token. The presented token has
256 random bits, so HKDF without stretching is enough. The old token's digest
is the associated data, binding the ciphertext to its row.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hatchway.errors import InvalidMessage
from hatchway.runtime import Random

_INFO = b"hatchway refresh successor v1"
_NONCE = 12


def _key(presented: str) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return kdf.derive(presented.encode("utf-8", "surrogatepass"))


def seal_successor(presented: str, successor: str, *, old_hash: bytes, random: Random) -> bytes:
    """``nonce || AES-GCM(successor)`` under a key only ``presented`` yields."""
    nonce = random(_NONCE)
    return nonce + AESGCM(_key(presented)).encrypt(nonce, successor.encode("ascii"), old_hash)


def open_successor(presented: str, sealed: bytes, *, old_hash: bytes) -> str:
    """The successor sealed by :func:`seal_successor`; ``InvalidMessage`` otherwise."""
    if len(sealed) <= _NONCE:
        raise InvalidMessage("sealed successor truncated")
    try:
        plain = AESGCM(_key(presented)).decrypt(sealed[:_NONCE], sealed[_NONCE:], old_hash)
    except InvalidTag:
        raise InvalidMessage("sealed successor does not open") from None
    return plain.decode("ascii")
