"""The server's data dir: created on first run, reused afterwards.

Layout (all private files are written atomically with mode 0600)::

    ca.pem / ca.key                 dev CA that issues TLS, device and application certs
    tls.pem / tls.key               HTTPS certificate for localhost, 127.0.0.1 and ::1
    message-keys.json               server message signing + encryption keys (private JWKs)
    hatchway.sqlite3                the embedded store

A crash half-way through creation leaves either the old file or the new one, never
a torn file, so a restart simply finishes the job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.errors import ConfigurationError
from hatchway.msgsec import (
    DecryptionKey,
    SignAlg,
    SigningKey,
    generate_decryption_key,
    generate_signing_key,
)
from hatchway.pki import CertificateAuthority, generate_tls_identity
from hatchway.pki.files import write_private, write_public


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    ca: CertificateAuthority
    tls_cert_path: Path
    tls_key_path: Path
    ca_cert_path: Path
    signing_key: SigningKey
    decryption_key: DecryptionKey


def ensure_data_dir(data_dir: Path, *, now: datetime | None = None) -> ServerIdentity:
    """Create whatever is missing under ``data_dir`` and load the server identity."""
    now = now or datetime.now(UTC)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Also tighten a dir that already existed: the database inside holds device
        # messages and commands in the clear, and SQLite creates its files with umask.
        if data_dir.stat().st_uid == os.getuid():
            data_dir.chmod(0o700)
    except OSError as exc:
        raise ConfigurationError(f"cannot create data dir {data_dir}: {exc}") from exc

    ca = _ensure_ca(data_dir, now)
    tls_cert, tls_key = data_dir / "tls.pem", data_dir / "tls.key"
    if not (tls_cert.exists() and tls_key.exists()) or _expired(tls_cert, now):
        cert, key = generate_tls_identity(ca, now=now)
        write_private(tls_key, _pkcs8(key))
        write_public(tls_cert, cert.public_bytes(serialization.Encoding.PEM))
    signing, decryption = _ensure_message_keys(data_dir / "message-keys.json")
    return ServerIdentity(
        ca=ca,
        tls_cert_path=tls_cert,
        tls_key_path=tls_key,
        ca_cert_path=data_dir / "ca.pem",
        signing_key=signing,
        decryption_key=decryption,
    )


def _ensure_ca(data_dir: Path, now: datetime) -> CertificateAuthority:
    cert_path, key_path = data_dir / "ca.pem", data_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        return CertificateAuthority.from_pem(cert_path.read_bytes(), key_path.read_bytes())
    ca = CertificateAuthority.generate(now=now)
    cert_pem, key_pem = ca.to_pem()
    # Key first: a crash between the two writes leaves no certificate without its key.
    write_private(key_path, key_pem)
    write_public(cert_path, cert_pem)
    return ca


def _ensure_message_keys(path: Path) -> tuple[SigningKey, DecryptionKey]:
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return (
                SigningKey.from_jwk(data["signing"]),
                DecryptionKey.from_jwk(data["encryption"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path} is not a valid message key file: {exc}") from exc
    signing = generate_signing_key(SignAlg.ES256)
    decryption = generate_decryption_key("P-256")
    payload = {
        "signing": signing.to_jwk(private=True),
        "encryption": decryption.to_jwk(private=True),
    }
    write_private(path, json.dumps(payload, indent=2).encode())
    return signing, decryption


def _expired(cert_path: Path, now: datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc <= now


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
