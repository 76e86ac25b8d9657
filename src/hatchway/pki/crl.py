"""Certificate revocation lists signed by the dev CA (RFC 5280 §5, X.509 v2 CRLs).

One CRL covers every device certificate the CA issued (a complete CRL, §5): each
revoked serial with its revocation date and a reasonCode entry extension (§5.3.1),
the CRL number (§5.2.3) and the authority key identifier (§5.2.1), ``thisUpdate``
and ``nextUpdate`` (§5.1.2.4-5). Device certificates point at it with a CRL
distribution point (§4.2.1.13, ``CertificateAuthority.issue_device``).
``cryptography`` builds and signs; nothing here encodes ASN.1 by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from hatchway.pki.ca import CertificateAuthority

#: Where both listeners serve the DER CRL (``application/pkix-crl``, RFC 5280 §4.2.1.13).
CRL_PATH = "/pki/crl"
CRL_MEDIA_TYPE = "application/pkix-crl"
#: A relying party must fetch a new CRL by then (RFC 5280 §5.1.2.5).
CRL_VALIDITY = timedelta(days=7)


class RevocationCode(StrEnum):
    """The reasonCode values (RFC 5280 §5.3.1) an operator may give a device certificate.

    ``certificateHold`` (not permanent), ``removeFromCRL`` (delta CRLs only) and the
    CA/AA compromise codes (not about a device) are left out on purpose.
    """

    KEY_COMPROMISE = "keyCompromise"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    UNSPECIFIED = "unspecified"

    @property
    def flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags(self.value)


@dataclass(frozen=True, slots=True)
class CrlEntry:
    serial: int
    revoked_at: datetime
    code: RevocationCode


def build_crl(
    ca: CertificateAuthority,
    entries: Sequence[CrlEntry],
    *,
    number: int,
    now: datetime,
    validity: timedelta = CRL_VALIDITY,
) -> x509.CertificateRevocationList:
    """Sign a complete CRL listing ``entries``; ``number`` must grow with every CRL."""
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if number < 1:
        raise ValueError("CRL numbers start at 1")
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(entry.code.flag), critical=False)
            .build()
        )
    return builder.sign(ca.private_key, hashes.SHA256())


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
