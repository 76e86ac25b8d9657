"""The emulated card's persistent state: keys, certificates, applet data.

A real SE keeps these in EEPROM that survives power loss; the emulator keeps them
in one JSON file, written atomically (temporary file in the same directory, fsync,
``os.replace``) with mode 0600 so that a crash mid-write never leaves a torn card
and other local users cannot read its private keys.

Personalisation (GP Card Spec v2.3.1 §9 "personalization", Amendment F §5.1):
load the trust anchor PK.CA-KLOC.ECDSA (hatchway's CA certificate), generate
SK.SD.ECKA and have the CA certify it under the secure-element profile of
``certprofile`` (keyAgreement only, SE EKU; the certificate store read by GET DATA
``BF21``), and generate the applet's signing key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hatchway.errors import ConfigurationError
from hatchway.runtime import Random

from .certprofile import se_certificate_extensions
from .kdf import p256_key_from_random

STATE_VERSION = 1
MAX_SECRET_LENGTH = 1024
_PEM = serialization.Encoding.PEM


@dataclass(frozen=True, slots=True)
class CardState:
    """Everything that survives a power cycle. Immutable: changes make a new value."""

    serial: str
    trust_anchor: x509.Certificate
    ca_kvn: int
    sd_key: ec.EllipticCurvePrivateKey
    sd_kvn: int
    sd_certificate: x509.Certificate
    applet_key: ec.EllipticCurvePrivateKey
    secret: bytes | None = None
    counter: int = 0

    def with_secret(self, secret: bytes) -> CardState:
        return replace(self, secret=secret)

    def with_counter(self, counter: int) -> CardState:
        return replace(self, counter=counter)

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "version": STATE_VERSION,
            "serial": self.serial,
            "trust_anchor": _cert_pem(self.trust_anchor),
            "ca_kvn": self.ca_kvn,
            "sd_key": _key_pem(self.sd_key),
            "sd_kvn": self.sd_kvn,
            "sd_certificate": _cert_pem(self.sd_certificate),
            "applet_key": _key_pem(self.applet_key),
            "secret": None if self.secret is None else self.secret.hex(),
            "counter": self.counter,
        }
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CardState:
        try:
            doc = json.loads(text)
            if doc.get("version") != STATE_VERSION:
                raise ConfigurationError("card state file has an unknown version")
            secret = doc["secret"]
            counter = doc["counter"]
            if not isinstance(counter, int) or counter < 0:
                raise ValueError("bad counter")
            return cls(
                serial=str(doc["serial"]),
                trust_anchor=x509.load_pem_x509_certificate(doc["trust_anchor"].encode()),
                ca_kvn=int(doc["ca_kvn"]),
                sd_key=_load_key(doc["sd_key"]),
                sd_kvn=int(doc["sd_kvn"]),
                sd_certificate=x509.load_pem_x509_certificate(doc["sd_certificate"].encode()),
                applet_key=_load_key(doc["applet_key"]),
                secret=None if secret is None else bytes.fromhex(secret),
                counter=counter,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigurationError(f"card state file is damaged: {exc}") from None


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(_PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC key")
    return key


def personalize(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    now: float,
    random: Random,
    valid_days: int = 3650,
    sd_kvn: int = 1,
    ca_kvn: int = 3,
) -> CardState:
    """A freshly personalised card trusting ``ca_cert``, its SD key certified by it."""
    serial = random(8).hex()
    sd_key = p256_key_from_random(random)
    start = dt.datetime.fromtimestamp(now, dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"hatchway SE {serial}"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(sd_key.public_key())
        .serial_number(int.from_bytes(random(16), "big") >> 1 | 1)
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=valid_days))
    )
    for extension, critical in se_certificate_extensions():
        builder = builder.add_extension(extension, critical=critical)
    sd_cert = builder.sign(ca_key, hashes.SHA256())
    return CardState(
        serial=serial,
        trust_anchor=ca_cert,
        ca_kvn=ca_kvn,
        sd_key=sd_key,
        sd_kvn=sd_kvn,
        sd_certificate=sd_cert,
        applet_key=p256_key_from_random(random),
    )


class CardStateFile:
    """Load and atomically save a ``CardState`` at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> CardState:
        try:
            return CardState.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"no card state at {self.path}; personalise first") from None

    def save(self, state: CardState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 already; the explicit chmod documents intent
        # and covers umask-free platforms.
        fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(state.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
