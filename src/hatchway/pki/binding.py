"""Binding a device's encryption key into its (signing-key) certificate.

US 11,546,310 B2 has each side identify *keys*: the device signs with one key
(certified as the certificate's SubjectPublicKeyInfo) and receives JWEs on
another. A JWE key cannot be the certified key (Ed25519 cannot do ECDH, and key
separation is good practice anyway), so the certificate carries a hash of it.

Encoding (non-critical, so other verifiers can ignore it):

* extnID: ``2.25.168450500866712194737547818190729589575`` — an OID under the
  ITU-T X.667 UUID arc (``2.25.<uuid as integer>``), which needs no registration;
* extnValue: the DER of ``EncryptionKeyBinding ::= OCTET STRING (SIZE (32))``,
  the SHA-256 digest of the encryption key's DER ``SubjectPublicKeyInfo`` — the
  same digest as an RFC 7469 ``pin-sha256`` pin, and independent of JOSE, so it
  does not depend on JWK canonicalisation (unlike an RFC 7638 thumbprint).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

ENCRYPTION_KEY_BINDING_OID = x509.ObjectIdentifier("2.25.168450500866712194737547818190729589575")

EncryptionPublicKey = ec.EllipticCurvePublicKey | x25519.X25519PublicKey

_DIGEST_LEN = 32
_DER_OCTET_STRING = 0x04


def spki_sha256(public_key: EncryptionPublicKey) -> bytes:
    """SHA-256 of the key's DER SubjectPublicKeyInfo (an RFC 7469 pin)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ValueError("device EC encryption keys must be P-256")
    if not isinstance(public_key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey):
        raise ValueError("device encryption keys must be P-256 or X25519")
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def binding_extension(public_key: EncryptionPublicKey) -> x509.UnrecognizedExtension:
    """The extension value that binds ``public_key`` (see module docstring)."""
    der = bytes([_DER_OCTET_STRING, _DIGEST_LEN]) + spki_sha256(public_key)
    return x509.UnrecognizedExtension(ENCRYPTION_KEY_BINDING_OID, der)


def encryption_key_digest(cert: x509.Certificate) -> bytes | None:
    """Return the bound SPKI digest, ``None`` if absent; ``ValueError`` if malformed."""
    try:
        ext = cert.extensions.get_extension_for_oid(ENCRYPTION_KEY_BINDING_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - defensive
        raise ValueError("unexpected encryption key binding type")
    der = value.value
    if len(der) != 2 + _DIGEST_LEN or der[0] != _DER_OCTET_STRING or der[1] != _DIGEST_LEN:
        raise ValueError("malformed encryption key binding")
    return der[2:]


def matches_encryption_key(cert: x509.Certificate, public_key: EncryptionPublicKey) -> bool:
    """True if ``cert`` binds exactly ``public_key`` (compared in constant time)."""
    try:
        digest = encryption_key_digest(cert)
    except ValueError:
        return False
    if digest is None:
        return False
    return hmac.compare_digest(digest, spki_sha256(public_key))
