"""Key derivation for SCP11 and SCP03 — the hazardous layer under ``scp11_*``.

* ``x963_kdf``: ANSI X9.63 KDF with SHA-256 as profiled by BSI TR-03111 v2.10 §4.3.3
  (counter from 1, 32-bit big-endian, ``Z || counter || SharedInfo``); *cryptography*'s
  ``X963KDF`` computes it, hatchway only fixes the hash and the length bounds.
* ``derive_scp11_keys``: GP Card Spec v2.3 Amendment F v1.4 §3.1.2 / §6.5.2 — the
  shared secret is ``ShSee || ShSes`` (both P-256 ECKA x-coordinates, BSI TR-03111
  §4.3.1), SharedInfo is key usage || key type || key length, and the output is cut
  into five AES-128 keys in the order receipt key, S-ENC, S-MAC, S-RMAC, S-DEK.
* ``receipt``: AES-CMAC (NIST SP 800-38B) under the receipt key over the key
  agreement data (Amendment F §6.5.2.3).
* ``scp03_derive``: the NIST SP 800-108 counter-mode KDF with AES-CMAC of
  Amendment D §6.2.2, kept for SCP03 known-answer vectors.
* ``p256_key_from_random``: ephemeral and static keys drawn from the injected
  ``Random`` so known-answer transcripts replay exactly (STYLE.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from hatchway.runtime import Random

from .constants import SESSION_KEY_LENGTH, KeyType, KeyUsage

#: Order of the P-256 group (SEC 2 §2.4.2).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: Rejection sampling needs on average ~1 draw; 64 failures in a row means a broken RNG.
_MAX_KEY_DRAWS = 64
_MAX_X963_LENGTH = 255 * 32


def x963_kdf(shared_secret: bytes, length: int, shared_info: bytes) -> bytes:
    """ANSI X9.63 KDF with SHA-256 (BSI TR-03111 §4.3.3)."""
    # X963KDF itself allows up to (2**32 - 1) hash blocks; SCP11 needs 80 bytes, and
    # a bound this side keeps a mistaken caller from asking for megabytes.
    if length <= 0 or length > _MAX_X963_LENGTH:
        raise ValueError("X9.63 output length out of range")
    return X963KDF(hashes.SHA256(), length, shared_info).derive(shared_secret)


def aes_cmac(key: bytes, *parts: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    for part in parts:
        mac.update(part)
    return mac.finalize()


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """The four SCP session keys; ``repr`` hides them so logs never carry keys."""

    s_enc: bytes
    s_mac: bytes
    s_rmac: bytes
    s_dek: bytes | None = None

    def __repr__(self) -> str:
        return "SessionKeys(<redacted>)"


@dataclass(frozen=True, slots=True, repr=False)
class Scp11Keys:
    """Receipt key plus session keys from one SCP11 key agreement."""

    receipt_key: bytes
    session: SessionKeys

    def __repr__(self) -> str:
        return "Scp11Keys(<redacted>)"


def scp11_shared_info(
    key_usage: int = KeyUsage.FULL,
    key_type: int = KeyType.AES,
    key_length: int = SESSION_KEY_LENGTH,
) -> bytes:
    """SharedInfo = key usage || key type || key length (Amendment F §6.5.2.2)."""
    return bytes((key_usage, key_type, key_length))


def derive_scp11_keys(sh_see: bytes, sh_ses: bytes, shared_info: bytes) -> Scp11Keys:
    """Five AES-128 keys from ``ShSee || ShSes`` (Amendment F §3.1.2)."""
    n = SESSION_KEY_LENGTH
    material = x963_kdf(sh_see + sh_ses, 5 * n, shared_info)
    keys = [material[i : i + n] for i in range(0, 5 * n, n)]
    return Scp11Keys(keys[0], SessionKeys(keys[1], keys[2], keys[3], keys[4]))


def receipt(receipt_key: bytes, key_agreement_data: bytes) -> bytes:
    """AES-CMAC over the command's CRT+ePK.OCE and the card's ePK.SD TLV."""
    return aes_cmac(receipt_key, key_agreement_data)


def ecka(private_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """ECKA-DH of BSI TR-03111 §4.3.1: the x-coordinate of d·Q, as fixed-size bytes."""
    return private_key.exchange(ec.ECDH(), public_key)


def p256_key_from_random(random: Random) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key whose scalar comes from ``random`` (rejection sampling).

    Reducing modulo the order would bias the scalar; redrawing does not.
    """
    for _ in range(_MAX_KEY_DRAWS):
        d = int.from_bytes(random(32), "big")
        if 0 < d < P256_ORDER:
            return ec.derive_private_key(d, ec.SECP256R1())
    raise RuntimeError("random source returned no usable P-256 scalar")


def scp03_derive(key: bytes, constant: int, context: bytes, bits: int = 128) -> bytes:
    """SP 800-108 counter-mode KDF with AES-CMAC, Amendment D §6.2.2 data layout."""
    if bits not in (64, 128):
        raise ValueError("SCP03 with AES-128 derives 64- or 128-bit values")
    label = b"\x00" * 11 + bytes([constant])
    data = label + b"\x00" + bits.to_bytes(2, "big") + b"\x01" + context
    return aes_cmac(key, data)[: bits // 8]


#: Derivation constants of Amendment D Table 6-1.
SCP03_CARD_CRYPTOGRAM = 0x00
SCP03_HOST_CRYPTOGRAM = 0x01
SCP03_S_ENC = 0x04
SCP03_S_MAC = 0x06
SCP03_S_RMAC = 0x07


def scp03_session_keys(
    k_enc: bytes, k_mac: bytes, host_challenge: bytes, card_challenge: bytes
) -> SessionKeys:
    """S-ENC, S-MAC, S-RMAC from the static keys and both challenges (§6.2.1)."""
    context = host_challenge + card_challenge
    return SessionKeys(
        scp03_derive(k_enc, SCP03_S_ENC, context),
        scp03_derive(k_mac, SCP03_S_MAC, context),
        scp03_derive(k_mac, SCP03_S_RMAC, context),
    )
