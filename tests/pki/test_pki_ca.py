"""The dev CA: RFC 5280 profile of the CA, TLS server and device certificates."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from hatchway.errors import ConfigurationError, InvalidMessage
from hatchway.pki import (
    ENCRYPTION_KEY_BINDING_OID,
    CertificateAuthority,
    encryption_key_digest,
    generate_tls_identity,
    matches_encryption_key,
    spki_sha256,
    write_private,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate(now=NOW)


def _server_verifier(
    ca: CertificateAuthority, name: x509.verification.Subject, at: datetime
) -> ServerVerifier:
    return PolicyBuilder().store(Store([ca.certificate])).time(at).build_server_verifier(name)


def test_ca_profile(ca: CertificateAuthority) -> None:
    cert = ca.certificate
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(ca.private_key.curve, ec.SECP256R1)
    assert cert.issuer == cert.subject
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    cert.verify_directly_issued_by(cert)


def test_serials_are_random(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    serials = {ca.issue_device("d", key, now=NOW).serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_pem_round_trip(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.to_pem()
    assert b"BEGIN PRIVATE KEY" in key_pem  # PKCS#8, unencrypted
    loaded = CertificateAuthority.from_pem(cert_pem, key_pem)
    assert loaded.certificate == ca.certificate
    assert loaded.private_key.private_numbers() == ca.private_key.private_numbers()


def test_from_pem_rejects_mismatched_key(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.generate(now=NOW)
    with pytest.raises(ConfigurationError, match="do not match"):
        CertificateAuthority.from_pem(ca.to_pem()[0], other.to_pem()[1])


def test_from_pem_rejects_leaf(ca: CertificateAuthority) -> None:
    leaf, key = generate_tls_identity(ca, NOW)
    from cryptography.hazmat.primitives import serialization

    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError, match="not a CA"):
        CertificateAuthority.from_pem(leaf.public_bytes(serialization.Encoding.PEM), key_pem)


def test_tls_certificate_passes_webpki_verifier(ca: CertificateAuthority) -> None:
    cert, _ = generate_tls_identity(ca, NOW)
    at = NOW + timedelta(days=1)
    chain = _server_verifier(ca, x509.DNSName("localhost"), at).verify(cert, [])
    assert chain[-1] == ca.certificate
    _server_verifier(ca, x509.IPAddress(ipaddress.ip_address("127.0.0.1")), at).verify(cert, [])
    _server_verifier(ca, x509.IPAddress(ipaddress.ip_address("::1")), at).verify(cert, [])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign


def test_tls_certificate_rejected_for_other_name(ca: CertificateAuthority) -> None:
    cert, _ = generate_tls_identity(ca, NOW)
    with pytest.raises(VerificationError):
        _server_verifier(ca, x509.DNSName("evil.example"), NOW).verify(cert, [])


def test_tls_certificate_rejected_by_other_ca(ca: CertificateAuthority) -> None:
    cert, _ = generate_tls_identity(ca, NOW)
    other = CertificateAuthority.generate(now=NOW)
    with pytest.raises(VerificationError):
        _server_verifier(other, x509.DNSName("localhost"), NOW).verify(cert, [])


def test_tls_certificate_rejected_when_expired(ca: CertificateAuthority) -> None:
    cert, _ = generate_tls_identity(ca, NOW)
    assert cert.not_valid_after_utc == NOW + timedelta(days=825)
    with pytest.raises(VerificationError):
        _server_verifier(ca, x509.DNSName("localhost"), NOW + timedelta(days=826)).verify(cert, [])


def test_tls_handshake_with_stdlib_ssl(ca: CertificateAuthority, tmp_path: Path) -> None:
    """A real TLS 1.3 handshake, client pinned to the dev CA, hostname checked."""
    from cryptography.hazmat.primitives import serialization

    now = datetime.now(UTC)  # ssl checks validity against the real clock
    live_ca = CertificateAuthority.generate(now=now)
    cert, key = generate_tls_identity(live_ca, now)
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cadata=live_ca.to_pem()[0].decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = client.getpeercert()
    assert peer is not None
    assert ("DNS", "localhost") in peer["subjectAltName"]


def test_tls_rejects_weak_keys(ca: CertificateAuthority) -> None:
    # Deliberately weak: the CA must refuse it.
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    with pytest.raises(ValueError, match="2048"):
        ca.issue_tls_server(weak, dns_names=["localhost"], ip_addresses=[], now=NOW)
    p192 = ec.generate_private_key(ec.SECP192R1()).public_key()
    with pytest.raises(ValueError, match="P-256"):
        ca.issue_tls_server(p192, dns_names=["localhost"], ip_addresses=[], now=NOW)
    ok = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ValueError, match="at least one"):
        ca.issue_tls_server(ok, dns_names=[], ip_addresses=[], now=NOW)


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CertificateAuthority.generate(now=datetime(2025, 1, 1))


def test_ed25519_device_certificate(ca: CertificateAuthority) -> None:
    signing = ed25519.Ed25519PrivateKey.generate().public_key()
    encryption = x25519.X25519PrivateKey.generate().public_key()
    cert = ca.issue_device("dev-42", signing, now=NOW, encryption_public_key=encryption)
    ca.verify_issued(cert, now=NOW + timedelta(days=10))
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["dev-42"]
    assert cert.public_key() == signing
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    binding = cert.extensions.get_extension_for_oid(ENCRYPTION_KEY_BINDING_OID)
    assert not binding.critical
    assert encryption_key_digest(cert) == spki_sha256(encryption)
    assert matches_encryption_key(cert, encryption)
    assert not matches_encryption_key(cert, x25519.X25519PrivateKey.generate().public_key())
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)


def test_p256_device_certificate_passes_client_verifier(ca: CertificateAuthority) -> None:
    signing = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = ca.issue_device("dev-7", signing, now=NOW)
    assert encryption_key_digest(cert) is None
    # Device identity is the subject CN, not a SAN, so relax only the SAN rule of
    # the WebPKI end-entity profile and keep every other check.
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(NOW)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    verified = verifier.verify(cert, [])
    assert verified.chain[-1] == ca.certificate


def test_device_key_allow_list(ca: CertificateAuthority) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(ValueError, match="P-256 or Ed25519"):
        ca.issue_device("d", rsa_key, now=NOW)  # type: ignore[arg-type]
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="P-256"):
        ca.issue_device("d", p384, now=NOW)
    ok = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ValueError, match="P-256"):
        ca.issue_device("d", ok, now=NOW, encryption_public_key=p384)
    with pytest.raises(ValueError, match="empty"):
        ca.issue_device("", ok, now=NOW)


def test_verify_issued_rejects_other_ca(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.generate(now=NOW)
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    cert = other.issue_device("dev", key, now=NOW)
    with pytest.raises(InvalidMessage) as err:
        ca.verify_issued(cert, now=NOW)
    assert str(err.value) == "invalid message"


def test_verify_issued_rejects_same_name_other_key(ca: CertificateAuthority) -> None:
    """An impostor CA with the same subject name fails on the signature."""
    impostor = CertificateAuthority.generate(now=NOW)
    assert impostor.certificate.subject == ca.certificate.subject
    cert = impostor.issue_device(
        "dev", ec.generate_private_key(ec.SECP256R1()).public_key(), now=NOW
    )
    with pytest.raises(InvalidMessage) as err:
        ca.verify_issued(cert, now=NOW)
    assert err.value.reason == "not signed by this CA"


def test_verify_issued_window(ca: CertificateAuthority) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    cert = ca.issue_device("dev", key, now=NOW, valid_days=30)
    ca.verify_issued(cert, now=NOW - timedelta(minutes=4))  # within clock skew
    with pytest.raises(InvalidMessage):
        ca.verify_issued(cert, now=NOW + timedelta(days=30, seconds=1))
    with pytest.raises(InvalidMessage):
        ca.verify_issued(cert, now=NOW - timedelta(minutes=6))


def test_verify_issued_rejects_ca_certificate(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidMessage):
        ca.verify_issued(ca.certificate, now=NOW)


def test_leaf_never_outlives_ca() -> None:
    short = CertificateAuthority.generate(now=NOW, valid_days=10)
    cert, _ = generate_tls_identity(short, NOW)
    assert cert.not_valid_after_utc == short.certificate.not_valid_after_utc


def _hand_built_leaf(ca: CertificateAuthority, *extensions: x509.ExtensionType) -> x509.Certificate:
    """A leaf signed by ``ca`` but built outside the recipe, to probe the checks."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca.certificate.subject)
        .public_key(ed25519.Ed25519PrivateKey.generate().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(ca.private_key, hashes.SHA256())


def test_verify_issued_needs_basic_constraints(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidMessage) as err:
        ca.verify_issued(_hand_built_leaf(ca), now=NOW)
    assert err.value.reason == "leaf lacks BasicConstraints"


def test_malformed_binding_never_matches(ca: CertificateAuthority) -> None:
    bogus = x509.UnrecognizedExtension(ENCRYPTION_KEY_BINDING_OID, b"\x04\x01\x00")
    cert = _hand_built_leaf(ca, bogus)
    with pytest.raises(ValueError, match="malformed"):
        encryption_key_digest(cert)
    assert not matches_encryption_key(cert, x25519.X25519PrivateKey.generate().public_key())


def test_encryption_key_allow_list() -> None:
    with pytest.raises(ValueError, match="P-256 or X25519"):
        spki_sha256(ed25519.Ed25519PrivateKey.generate().public_key())  # type: ignore[arg-type]


def test_tls_rejects_non_tls_key_types(ca: CertificateAuthority) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ValueError, match="unsupported"):
        ca.issue_tls_server(key, dns_names=["localhost"], ip_addresses=[], now=NOW)  # type: ignore[arg-type]


def test_from_pem_rejects_non_p256_key(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives import serialization

    key_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError, match="P-256"):
        CertificateAuthority.from_pem(ca.to_pem()[0], key_pem)
