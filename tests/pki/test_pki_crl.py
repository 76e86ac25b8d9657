"""RFC 5280 §5 CRLs from the dev CA, checked with ``cryptography`` against the CA
certificate: signature, issuer, CRL number, nextUpdate, each serial with its
revocation date and reasonCode; and the CRL distribution point of device certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.pki import (
    CertificateAuthority,
    CrlEntry,
    RevocationCode,
    build_crl,
    crl_der,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate(now=NOW)


def device_cert(ca: CertificateAuthority, uri: str | None = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return ca.issue_device("meter-001", key, now=NOW, crl_uri=uri)


def test_crl_rfc5280_section5_fields_verify_against_the_ca(ca: CertificateAuthority) -> None:
    stolen, retired = device_cert(ca), device_cert(ca)
    entries = [
        CrlEntry(stolen.serial_number, NOW, RevocationCode.KEY_COMPROMISE),
        CrlEntry(
            retired.serial_number, NOW + timedelta(hours=1), RevocationCode.CESSATION_OF_OPERATION
        ),
    ]
    crl = x509.load_der_x509_crl(
        crl_der(build_crl(ca, entries, number=7, now=NOW + timedelta(hours=2)))
    )
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == NOW + timedelta(hours=2)
    assert crl.next_update_utc == NOW + timedelta(days=7, hours=2)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
    assert number.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    listed = crl.get_revoked_certificate_by_serial_number(stolen.serial_number)
    assert listed is not None and listed.revocation_date_utc == NOW
    reason = listed.extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason is x509.ReasonFlags.key_compromise
    other = crl.get_revoked_certificate_by_serial_number(retired.serial_number)
    assert other is not None
    assert (
        other.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.cessation_of_operation
    )
    assert crl.get_revoked_certificate_by_serial_number(device_cert(ca).serial_number) is None


def test_a_crl_signed_by_another_ca_does_not_verify(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.generate(now=NOW)
    crl = build_crl(other, [], number=1, now=NOW)
    assert not crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]


def test_tampered_crl_does_not_verify(ca: CertificateAuthority) -> None:
    der = bytearray(crl_der(build_crl(ca, [], number=1, now=NOW)))
    der[-5] ^= 0x01  # inside the signature
    crl = x509.load_der_x509_crl(bytes(der))
    assert not crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]


def test_crl_inputs_are_checked(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_crl(ca, [], number=1, now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="start at 1"):
        build_crl(ca, [], number=0, now=NOW)


def test_every_offered_reason_code_is_an_rfc5280_reason() -> None:
    for code in RevocationCode:
        assert code.flag in set(x509.ReasonFlags)
    assert "certificateHold" not in {c.value for c in RevocationCode}


def test_device_certificate_names_the_crl(ca: CertificateAuthority) -> None:
    cert = device_cert(ca, "http://localhost:8080/pki/crl")
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not points.critical
    (point,) = points.value
    assert point.full_name == [x509.UniformResourceIdentifier("http://localhost:8080/pki/crl")]
    without = device_cert(ca)
    with pytest.raises(x509.ExtensionNotFound):
        without.extensions.get_extension_for_class(x509.CRLDistributionPoints)
