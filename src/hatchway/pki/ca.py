"""The hatchway dev CA: TLS server and device certificates (RFC 5280 profile).

One P-256 CA signs two kinds of leaves:

* TLS server certificates for the HTTPS listener (serverAuth EKU, SAN, RFC 5280
  §4.2.1.6 and the CA/Browser Forum profile that ``cryptography``'s WebPKI verifier
  enforces);
* device certificates issued at enrolment (US 11,546,310 B2 claim 1, step 3:
  "exchange certificates and identify keys"). The subject CN is the device id,
  the certified key is the device's *signing* key, and the device's separate
  *encryption* key is bound by its SPKI hash in a private, non-critical extension
  (see :mod:`hatchway.pki.binding`).

Verification failures are opaque (STYLE.md §5): :meth:`verify_issued` raises the
single :class:`~hatchway.errors.InvalidMessage` whatever check failed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hatchway.errors import ConfigurationError, InvalidMessage
from hatchway.pki.binding import EncryptionPublicKey, binding_extension

#: Certificates start this long before ``now`` so a device whose clock runs a
#: little behind the server's does not reject a certificate issued a moment ago.
CLOCK_SKEW = timedelta(minutes=5)

TlsPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
SigningPublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_TLS_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MIN_RSA_BITS = 2048


def _utc(now: datetime) -> datetime:
    # A naive datetime has no defined instant; guessing local time would make
    # validity windows depend on the host's time zone.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA certificate and its P-256 private key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(
        cls, *, common_name: str = "hatchway dev CA", now: datetime, valid_days: int = 3650
    ) -> CertificateAuthority:
        """Create a fresh self-signed CA (CA:true, pathlen 0: it signs leaves only)."""
        start = _utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hatchway"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(start + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate=cert, private_key=key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Load a CA written by :meth:`to_pem`; refuses mismatched or non-CA pairs."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ConfigurationError("CA key must be an unencrypted P-256 private key")
        if key.public_key() != cert.public_key():
            raise ConfigurationError("CA certificate and private key do not match")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise ConfigurationError("CA certificate lacks BasicConstraints") from None
        if not constraints.value.ca:
            raise ConfigurationError("certificate is not a CA certificate")
        return cls(certificate=cert, private_key=key)

    def to_pem(self) -> tuple[bytes, bytes]:
        """Return ``(certificate PEM, unencrypted PKCS#8 key PEM)``.

        The key is unencrypted because the embedded server must restart unattended;
        protect it with :func:`hatchway.pki.files.write_private` (mode 0600).
        """
        cert_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        key_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert_pem, key_pem

    def issue_tls_server(
        self,
        public_key: TlsPublicKey,
        *,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str],
        now: datetime,
        valid_days: int = 825,
    ) -> x509.Certificate:
        """Issue a TLS server certificate for the given names (serverAuth EKU)."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, _TLS_CURVES):
                raise ValueError("TLS keys must be P-256 or P-384")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < _MIN_RSA_BITS:
                raise ValueError("RSA TLS keys must be at least 2048 bits")
        else:
            raise ValueError("unsupported TLS public key type")
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if not sans:
            raise ValueError("a TLS certificate needs at least one DNS name or IP address")
        common_name = dns_names[0] if dns_names else ip_addresses[0]
        builder = self._leaf_builder(public_key, common_name, now, valid_days)
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        return builder.sign(self.private_key, hashes.SHA256())

    def issue_device(
        self,
        device_id: str,
        signing_public_key: SigningPublicKey,
        *,
        now: datetime,
        valid_days: int = 365,
        encryption_public_key: EncryptionPublicKey | None = None,
        crl_uri: str | None = None,
    ) -> x509.Certificate:
        """Issue a device certificate (clientAuth EKU) for its signing key.

        ``signing_public_key`` must be P-256 (ES256) or Ed25519 (EdDSA). If
        ``encryption_public_key`` is given, its SPKI SHA-256 hash is bound into the
        certificate so a peer can check that the device's JWE key belongs to it.
        ``crl_uri`` names the CA's CRL in a CRL distribution point (RFC 5280 §4.2.1.13).
        """
        if isinstance(signing_public_key, ec.EllipticCurvePublicKey):
            if not isinstance(signing_public_key.curve, ec.SECP256R1):
                raise ValueError("device EC signing keys must be P-256")
        elif not isinstance(signing_public_key, ed25519.Ed25519PublicKey):
            raise ValueError("device signing keys must be P-256 or Ed25519")
        if not device_id:
            raise ValueError("device_id must not be empty")
        builder = self._leaf_builder(signing_public_key, device_id, now, valid_days)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        if encryption_public_key is not None:
            builder = builder.add_extension(
                binding_extension(encryption_public_key), critical=False
            )
        if crl_uri is not None:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(crl_uri)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
        return builder.sign(self.private_key, hashes.SHA256())

    def verify_issued(self, cert: x509.Certificate, *, now: datetime) -> None:
        """Check that this CA signed ``cert`` and that both are valid at ``now``.

        Raises :class:`InvalidMessage` (opaque; ``reason`` is for logs only).
        """
        instant = _utc(now)
        ca = self.certificate
        if cert.issuer != ca.subject:
            raise InvalidMessage("issuer name does not match CA")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise InvalidMessage("not signed by this CA") from None
        for checked in (ca, cert):
            if not checked.not_valid_before_utc <= instant <= checked.not_valid_after_utc:
                raise InvalidMessage("outside validity window")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise InvalidMessage("leaf lacks BasicConstraints") from None
        if constraints.value.ca:
            raise InvalidMessage("leaf is a CA certificate")

    def _leaf_builder(
        self,
        public_key: TlsPublicKey | SigningPublicKey,
        common_name: str,
        now: datetime,
        valid_days: int,
    ) -> x509.CertificateBuilder:
        start = _utc(now)
        # A leaf must not outlive its issuer: verifiers reject the chain once the
        # CA expires anyway, so a longer leaf would only mislead its holder.
        end = min(start + timedelta(days=valid_days), self.certificate.not_valid_after_utc)
        ca_ski = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )


def generate_tls_identity(
    ca: CertificateAuthority,
    now: datetime,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Generate a fresh P-256 key and a TLS server certificate for it from ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_tls_server(
        key.public_key(), dns_names=dns_names, ip_addresses=ip_addresses, now=now
    )
    return cert, key
