"""Fixtures for the secure-element tests: a CA, an origin-bound OCE, a personalised card.

The CA here is a test stand-in built from ``cryptography`` directly, so these tests
depend on nothing but ``hatchway.se`` (``hatchway.pki`` is another component).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.se import (
    CardStateFile,
    SoftCard,
    issue_application_certificate,
    personalize,
)
from hatchway.se.appcert import ORIGIN_BINDING_OID
from hatchway.se.kdf import p256_key_from_random

ORIGIN = "https://localhost:8443"
NOW = 1_700_000_000.0


def make_ca(
    name: str, now: float, key: ec.EllipticCurvePrivateKey, *, days: int = 3650
) -> x509.Certificate:
    start = dt.datetime.fromtimestamp(now, dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start - dt.timedelta(days=1))
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


@dataclass
class Pki:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    oce_key: ec.EllipticCurvePrivateKey
    oce_cert: x509.Certificate


@pytest.fixture(scope="session")
def pki() -> Pki:
    rng = SeededRandom(b"se-test-pki")
    ca_key = p256_key_from_random(rng)
    ca_cert = make_ca("hatchway test CA", NOW, ca_key)
    oce_key = p256_key_from_random(rng)
    oce_cert = issue_application_certificate(
        ca_cert,
        ca_key,
        oce_key.public_key(),
        origin=ORIGIN,
        tls_spki_sha256=None,
        now=NOW,
        valid_days=30,
    )
    return Pki(ca_key, ca_cert, oce_key, oce_cert)


@pytest.fixture
def card_clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def card_path(tmp_path: Path, pki: Pki) -> Path:
    path = tmp_path / "card.json"
    state = personalize(pki.ca_cert, pki.ca_key, now=NOW, random=SeededRandom(b"se-test-card"))
    CardStateFile(path).save(state)
    return path


@pytest.fixture
def card(card_path: Path, card_clock: FrozenClock) -> SoftCard:
    soft = SoftCard.from_file(card_path, clock=card_clock, random=SeededRandom(b"card-rng"))
    soft.power_on()
    return soft


@pytest.fixture(scope="session")
def other_pki() -> Pki:
    """A second, unrelated CA with its own origin-bound OCE certificate."""
    rng = SeededRandom(b"se-test-other-pki")
    ca_key = p256_key_from_random(rng)
    ca_cert = make_ca("hatchway test CA", NOW, ca_key)  # same name: only the key differs
    oce_key = p256_key_from_random(rng)
    oce_cert = issue_application_certificate(
        ca_cert,
        ca_key,
        oce_key.public_key(),
        origin=ORIGIN,
        tls_spki_sha256=None,
        now=NOW,
        valid_days=30,
    )
    return Pki(ca_key, ca_cert, oce_key, oce_cert)


@pytest.fixture(scope="session")
def signing_cert(pki: Pki) -> Pki:
    """The right CA and origin, but a certificate for signing instead of key agreement."""
    start = dt.datetime.fromtimestamp(NOW, dt.UTC)
    genuine = pki.oce_cert.extensions.get_extension_for_oid(ORIGIN_BINDING_OID)
    cert = (
        x509.CertificateBuilder()
        .subject_name(pki.oce_cert.subject)
        .issuer_name(pki.ca_cert.subject)
        .public_key(pki.oce_key.public_key())
        .serial_number(99)
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(genuine.value, critical=False)
        .sign(pki.ca_key, hashes.SHA256())
    )
    return Pki(pki.ca_key, pki.ca_cert, pki.oce_key, cert)
