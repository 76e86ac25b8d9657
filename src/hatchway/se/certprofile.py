"""Certificate profiles of the secure-element channel, and the host's check of a card.

hatchway's one CA certifies several kinds of key, and a signature by that CA alone
says nothing about *which* kind a certificate is. Device certificates (enrolment,
``pki.ca.CertificateAuthority.issue_device``) certify keys their owners hold, so a
host that accepted "any certificate from our CA" as a secure element would provision
its secret into whatever software an enrolled user runs. Each profile therefore
carries its own extended key usage (RFC 5280 §4.2.1.12), under hatchway's ``2.25``
UUID arc (ITU-T X.667 §8; ``.1`` is the origin binding of ``appcert``):

=========================================  =====================================  ==========
certificate                                 keyUsage (critical)                    EKU
=========================================  =====================================  ==========
SD ECKA certificate of a card (GP Amd F     keyAgreement only                      ``…891.2``
§6.2, made at personalisation, BF21)
OCE application certificate (``appcert``)   keyAgreement only                      ``…891.3``
device certificate (``pki.ca``)             digitalSignature                       clientAuth
TLS server certificate (``pki.ca``)         digitalSignature                       serverAuth
=========================================  =====================================  ==========

``verify_card_certificate`` is the host's (server's) check of the card's leaf: issued
by the trust anchor, valid now, not a CA, keyUsage exactly keyAgreement, the SE EKU,
an ECDSA-SHA256/384 signature and a P-256 key. Any failure is the one opaque
``UntrustedCard``.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID

from hatchway.errors import InvalidMessage

_ARC = "2.25.129035342240183155408243354213884003891"
#: EKU of a secure element's SD ECKA certificate (the key behind SCP11 ``SK.SD.ECKA``).
SE_ECKA_EKU = x509.ObjectIdentifier(f"{_ARC}.2")
#: EKU of the server's OCE application certificate (SCP11a/c ``SK.OCE.ECKA``).
OCE_ECKA_EKU = x509.ObjectIdentifier(f"{_ARC}.3")

#: The only certificate signature algorithms either side accepts (STYLE.md §7).
SIGNATURE_ALGORITHMS = frozenset(
    {SignatureAlgorithmOID.ECDSA_WITH_SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA384}
)

KEY_AGREEMENT_ONLY = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


class UntrustedCard(InvalidMessage):
    """The card's certificate is not a secure-element certificate from the trust anchor.

    Opaque like every ``InvalidMessage``; a distinct class only so that a server can
    answer "untrusted card" rather than "handshake failed".
    """


def se_certificate_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions of an SD ECKA certificate, as (value, critical) pairs."""
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (KEY_AGREEMENT_ONLY, True),
        (x509.ExtendedKeyUsage([SE_ECKA_EKU]), False),
    ]


_CARD_UNDERSTOOD = frozenset({
    x509.BasicConstraints.oid, x509.KeyUsage.oid, x509.ExtendedKeyUsage.oid,
})


def unknown_critical(cert: x509.Certificate, understood: frozenset[x509.ObjectIdentifier]) -> bool:
    """RFC 5280 §4.2: a critical extension the checker does not process voids the cert."""
    return any(ext.critical and ext.oid not in understood for ext in cert.extensions)


def _extension(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(cls).value


def verify_card_certificate(
    leaf: x509.Certificate, anchor: x509.Certificate, now: float
) -> ec.EllipticCurvePublicKey:
    """PK.SD.ECKA from a card leaf certificate that fits the SE profile, else ``UntrustedCard``."""
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UntrustedCard("card key")
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        if leaf.signature_algorithm_oid not in SIGNATURE_ALGORITHMS:
            raise ValueError("signature algorithm")
        leaf.verify_directly_issued_by(anchor)
        constraints = _extension(leaf, x509.BasicConstraints)
        usage = _extension(leaf, x509.KeyUsage)
        eku = _extension(leaf, x509.ExtendedKeyUsage)
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        raise UntrustedCard("card certificate") from None
    if not leaf.not_valid_before_utc <= when <= leaf.not_valid_after_utc:
        raise UntrustedCard("card certificate validity")
    if unknown_critical(leaf, _CARD_UNDERSTOOD):
        raise UntrustedCard("unknown critical extension")
    if not isinstance(constraints, x509.BasicConstraints) or constraints.ca:
        raise UntrustedCard("card certificate is a CA")
    if usage != KEY_AGREEMENT_ONLY:
        raise UntrustedCard("card key usage is not keyAgreement")
    if not isinstance(eku, x509.ExtendedKeyUsage) or SE_ECKA_EKU not in eku:
        raise UntrustedCard("not a secure-element certificate")
    return key
