"""hatchway's public-key infrastructure: the dev CA, TLS and device certificates.

``CertificateAuthority`` is the safe recipe (STYLE.md §6): callers ask for a TLS
server or device certificate and get one with the right extensions, never a raw
builder. ``files`` writes key material atomically with the right permissions.
"""

from hatchway.pki.binding import (
    ENCRYPTION_KEY_BINDING_OID,
    EncryptionPublicKey,
    encryption_key_digest,
    matches_encryption_key,
    spki_sha256,
)
from hatchway.pki.ca import (
    CLOCK_SKEW,
    CertificateAuthority,
    SigningPublicKey,
    TlsPublicKey,
    generate_tls_identity,
)
from hatchway.pki.crl import (
    CRL_MEDIA_TYPE,
    CRL_PATH,
    CrlEntry,
    RevocationCode,
    build_crl,
    crl_der,
)
from hatchway.pki.files import write_private, write_public

__all__ = [
    "CLOCK_SKEW",
    "CRL_MEDIA_TYPE",
    "CRL_PATH",
    "ENCRYPTION_KEY_BINDING_OID",
    "CertificateAuthority",
    "CrlEntry",
    "EncryptionPublicKey",
    "RevocationCode",
    "SigningPublicKey",
    "TlsPublicKey",
    "build_crl",
    "crl_der",
    "encryption_key_digest",
    "generate_tls_identity",
    "matches_encryption_key",
    "spki_sha256",
    "write_private",
    "write_public",
]
