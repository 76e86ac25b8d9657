"""The origin-bound application certificate and the card's four checks."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.errors import LocalProtocolError
from hatchway.runtime import SeededRandom
from hatchway.se.appcert import (
    ORIGIN_BINDING_OID,
    CertificateRejected,
    OriginBinding,
    issue_application_certificate,
    origin_identity,
    serialize_origin,
    spki_identity,
    verify_oce_chain,
)
from hatchway.se.constants import SW
from hatchway.se.kdf import p256_key_from_random

from .conftest import NOW, ORIGIN, Pki, make_ca

DER = serialization.Encoding.DER


@pytest.mark.parametrize(
    ("given", "serialized"),
    [
        ("https://localhost:8443", "https://localhost:8443"),
        ("HTTPS://LocalHost:8443/", "https://localhost:8443"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("https://[0:0:0:0:0:0:0:1]", "https://[::1]"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
    ],
)
def test_rfc6454_6_2_ascii_serialization(given: str, serialized: str) -> None:
    assert serialize_origin(given) == serialized
    assert origin_identity(given) == hashlib.sha256(serialized.encode()).digest()


@pytest.mark.parametrize(
    "garbage",
    [
        "null",
        "",
        "localhost:8443",
        "ftp://example.com",
        "https://",
        "https://a.b/path",
        "https://a.b?q",
        "https://user@a.b",
        "https://a.b:0",
        "https://a.b:65536",
        "https://a.b:08443",
        "https://[zz::1]",
        "https://999.1.1.1",
        "https://a..b",
        "https://exa mple.com",
        "https://a.b\n",
        "https://" + "a" * 600,
        "javascript:alert(1)",
    ],
)
def test_garbage_origins_are_refused(garbage: str) -> None:
    with pytest.raises(ValueError):
        origin_identity(garbage)


def test_certificate_carries_the_documented_binding(pki: Pki) -> None:
    ext = pki.oce_cert.extensions.get_extension_for_oid(ORIGIN_BINDING_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == bytes.fromhex("30220420") + origin_identity(ORIGIN)
    usage = pki.oce_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement and not usage.digital_signature


def test_binding_with_tls_spki_digest_round_trips(pki: Pki) -> None:
    spki = spki_identity(pki.ca_cert)
    cert = issue_application_certificate(
        pki.ca_cert,
        pki.ca_key,
        pki.oce_key.public_key(),
        origin=ORIGIN,
        tls_spki_sha256=spki,
        now=NOW,
        valid_days=1,
    )
    raw = cert.extensions.get_extension_for_oid(ORIGIN_BINDING_OID).value
    assert isinstance(raw, x509.UnrecognizedExtension)
    assert OriginBinding.decode(raw.value) == OriginBinding(origin_identity(ORIGIN), spki)
    for bad in (raw.value[:-1], raw.value + b"\x00", b"\x30\x22\x04\x21" + bytes(32)):
        with pytest.raises(ValueError):
            OriginBinding.decode(bad)


def test_issuer_refuses_bad_inputs(pki: Pki) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(LocalProtocolError):
        issue_application_certificate(
            pki.ca_cert,
            pki.ca_key,
            p384,
            origin=ORIGIN,
            tls_spki_sha256=None,
            now=NOW,
            valid_days=1,
        )
    with pytest.raises(LocalProtocolError):
        issue_application_certificate(
            pki.ca_cert,
            pki.ca_key,
            pki.oce_key.public_key(),
            origin=ORIGIN,
            tls_spki_sha256=b"short",
            now=NOW,
            valid_days=1,
        )
    with pytest.raises(ValueError):
        issue_application_certificate(
            pki.ca_cert,
            pki.ca_key,
            pki.oce_key.public_key(),
            origin="null",
            tls_spki_sha256=None,
            now=NOW,
            valid_days=1,
        )


def check(pki: Pki, chain: list[x509.Certificate], *, now: float = NOW, origin: str = ORIGIN) -> SW:
    try:
        verify_oce_chain(
            [c.public_bytes(DER) for c in chain],
            pki.ca_cert,
            now=now,
            expected_identity=origin_identity(origin),
        )
    except CertificateRejected as rejected:
        return rejected.sw
    return SW.OK


def test_the_genuine_chain_passes(pki: Pki) -> None:
    assert check(pki, [pki.oce_cert]) == SW.OK
    assert check(pki, [pki.ca_cert, pki.oce_cert]) == SW.OK  # anchor sent along is ignored


def test_wrong_ca(pki: Pki) -> None:
    rogue_key = p256_key_from_random(SeededRandom(b"rogue"))
    rogue_ca = make_ca("hatchway test CA", NOW, rogue_key)  # same name, other key
    forged = issue_application_certificate(
        rogue_ca,
        rogue_key,
        pki.oce_key.public_key(),
        origin=ORIGIN,
        tls_spki_sha256=None,
        now=NOW,
        valid_days=30,
    )
    assert check(pki, [forged]) == SW.SECURITY_STATUS_NOT_SATISFIED
    assert check(pki, [rogue_ca, forged]) == SW.SECURITY_STATUS_NOT_SATISFIED


def test_expired_and_not_yet_valid(pki: Pki) -> None:
    assert check(pki, [pki.oce_cert], now=NOW + 31 * 86400) == SW.DATA_INVALID
    assert check(pki, [pki.oce_cert], now=NOW - 86400) == SW.DATA_INVALID


def test_wrong_key_usage(pki: Pki) -> None:
    cert = _leaf(pki, x509.KeyUsage(True, False, False, False, True, False, False, False, False))
    assert check(pki, [cert]) == SW.CONDITIONS_NOT_SATISFIED
    assert check(pki, [_leaf(pki, None)]) == SW.CONDITIONS_NOT_SATISFIED


def test_identity_mismatch_is_the_phishing_case(pki: Pki) -> None:
    assert check(pki, [pki.oce_cert], origin="https://hatchway-login.example") == (
        SW.REFERENCE_DATA_NOT_FOUND
    )
    assert check(pki, [pki.oce_cert], origin="https://localhost:8444") == (
        SW.REFERENCE_DATA_NOT_FOUND
    )


def test_malformed_chains(pki: Pki) -> None:
    assert check(pki, []) == SW.WRONG_DATA
    assert check(pki, [pki.oce_cert] * 5) == SW.WRONG_DATA
    with pytest.raises(CertificateRejected) as rejected:
        verify_oce_chain(
            [b"\x30\x03\x02\x01\x01"],
            pki.ca_cert,
            now=NOW,
            expected_identity=origin_identity(ORIGIN),
        )
    assert rejected.value.sw == SW.WRONG_DATA
    no_binding = _leaf(
        pki,
        x509.KeyUsage(False, False, False, False, True, False, False, False, False),
        binding=False,
    )
    assert check(pki, [no_binding]) == SW.WRONG_DATA


def test_intermediate_must_be_a_ca(pki: Pki) -> None:
    # A leaf cannot act as an issuer: a non-CA "intermediate" breaks the chain.
    child = issue_application_certificate(
        x509.load_der_x509_certificate(pki.oce_cert.public_bytes(DER)),
        pki.oce_key,
        pki.oce_key.public_key(),
        origin=ORIGIN,
        tls_spki_sha256=None,
        now=NOW,
        valid_days=1,
    )
    assert check(pki, [pki.oce_cert, child]) == SW.SECURITY_STATUS_NOT_SATISFIED


def _leaf(pki: Pki, usage: x509.KeyUsage | None, *, binding: bool = True) -> x509.Certificate:
    start = dt.datetime.fromtimestamp(NOW, dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(pki.oce_cert.subject)
        .issuer_name(pki.ca_cert.subject)
        .public_key(pki.oce_key.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if binding:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                ORIGIN_BINDING_OID, OriginBinding(origin_identity(ORIGIN)).encode()
            ),
            critical=False,
        )
    return builder.sign(pki.ca_key, hashes.SHA256())
