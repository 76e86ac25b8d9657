"""The origin-bound application certificate (US 10,812,467 B2 claim 1, steps 2-4).

The certificate is the X.509 OCE certificate of GP Amendment F §6.4 (sent by
PERFORM SECURITY OPERATION) for the server's ECKA key, issued by hatchway's CA. It
carries, in a non-critical private extension, a value generated from the server's
identity: SHA-256 of the ASCII serialization of the web app's origin (RFC 6454
§6.2), and optionally SHA-256 of the HTTPS certificate's DER SubjectPublicKeyInfo.

Extension OID: ``2.25.129035342240183155408243354213884003891.1`` — the ``2.25``
arc lets anyone mint an OID from a UUID without registration (ITU-T X.667 §8);
this UUID is hatchway's, ``.1`` is "origin binding". Value (DER)::

    OriginBinding ::= SEQUENCE {
        originDigest   OCTET STRING (SIZE (32)),        -- SHA-256(ASCII origin)
        tlsSpkiDigest  [0] IMPLICIT OCTET STRING (SIZE (32)) OPTIONAL }

The card-side check (``verify_oce_chain``) refuses with one status word per failed
condition, so an operator can tell what is wrong (certificates are public, so the
distinction leaks nothing secret):

====================================  ===========================================
condition                              status word
====================================  ===========================================
certificate unparsable / no binding    6A80 WRONG_DATA
chain not valid under trust anchor     6982 SECURITY_STATUS_NOT_SATISFIED
expired or not yet valid (card clock)  6984 DATA_INVALID
key usage is not keyAgreement only     6985 CONDITIONS_NOT_SATISFIED
identity value != bridge's origin      6A88 REFERENCE_DATA_NOT_FOUND
====================================  ===========================================
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import idna
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from hatchway.errors import LocalProtocolError

from .constants import SW

ORIGIN_BINDING_OID = x509.ObjectIdentifier("2.25.129035342240183155408243354213884003891.1")
DIGEST_LENGTH = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ORIGIN_LENGTH = 512
MAX_CHAIN_LENGTH = 4
MAX_CERT_SIZE = 4096

_ORIGIN_RE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/?#@\[\]\\]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?"
)


def serialize_origin(origin: str) -> str:
    """The ASCII serialization of a web origin (RFC 6454 §6.2), or ``ValueError``.

    Scheme and host are lowercased, IDNA hosts become A-labels (UTS #46, as browsers
    do), IPv6 literals are canonicalised, and the scheme's default port is dropped.
    Anything with userinfo, path, query or fragment is not an origin and is refused,
    as are opaque origins (``null``) and schemes other than http/https.
    """
    if len(origin) > MAX_ORIGIN_LENGTH or not origin.isprintable():
        raise ValueError("not an origin")
    match = _ORIGIN_RE.fullmatch(origin)
    if match is None:
        raise ValueError("not an origin")
    scheme = match["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("origin scheme must be http or https")
    host = _canonical_host(match["host"])
    port = match["port"]
    suffix = ""
    if port is not None:
        if port != str(int(port)) or not 0 < int(port) <= 65535:
            raise ValueError("origin port out of range")
        if int(port) != _DEFAULT_PORTS[scheme]:
            suffix = f":{int(port)}"
    return f"{scheme}://{host}{suffix}"


def _canonical_host(host: str) -> str:
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise ValueError("bad IPv6 literal") from None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError("bad IPv4 address") from None
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValueError("host is not a valid domain name") from None
    return ascii_host.lower()


def origin_identity(origin: str) -> bytes:
    """SHA-256 of the origin's ASCII serialization: the value the card compares."""
    return hashlib.sha256(serialize_origin(origin).encode("ascii")).digest()


def spki_identity(certificate: x509.Certificate) -> bytes:
    """SHA-256 of a (TLS) certificate's DER SubjectPublicKeyInfo."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


@dataclass(frozen=True, slots=True)
class OriginBinding:
    origin_digest: bytes
    tls_spki_digest: bytes | None = None

    def encode(self) -> bytes:
        body = b"\x04\x20" + self.origin_digest
        if self.tls_spki_digest is not None:
            body += b"\x80\x20" + self.tls_spki_digest
        return bytes([0x30, len(body)]) + body

    @classmethod
    def decode(cls, der: bytes) -> OriginBinding:
        """Strict DER: exactly one of the two accepted shapes, nothing else."""
        one = 2 + 2 + DIGEST_LENGTH
        if len(der) == one and der[:4] == b"\x30\x22\x04\x20":
            return cls(der[4:])
        if (
            len(der) == one + 2 + DIGEST_LENGTH
            and der[:4] == b"\x30\x44\x04\x20"
            and der[one : one + 2] == b"\x80\x20"
        ):
            return cls(der[4:one], der[one + 2 :])
        raise ValueError("malformed origin binding")


def issue_application_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    oce_public_key: ec.EllipticCurvePublicKey,
    *,
    origin: str,
    tls_spki_sha256: bytes | None,
    now: float,
    valid_days: int,
    serial: int | None = None,
) -> x509.Certificate:
    """The CA issues the server its OCE ECKA certificate, bound to ``origin``."""
    if not isinstance(oce_public_key.curve, ec.SECP256R1):
        raise LocalProtocolError("the OCE key must be a P-256 key")
    if tls_spki_sha256 is not None and len(tls_spki_sha256) != DIGEST_LENGTH:
        raise LocalProtocolError("tls_spki_sha256 must be a SHA-256 digest")
    if valid_days <= 0:
        raise LocalProtocolError("valid_days must be positive")
    binding = OriginBinding(origin_identity(origin), tls_spki_sha256)
    start = dt.datetime.fromtimestamp(now, dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serialize_origin(origin))])
        )
        .issuer_name(ca_cert.subject)
        .public_key(oce_public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_AGREEMENT_ONLY, critical=True)
        .add_extension(x509.UnrecognizedExtension(ORIGIN_BINDING_OID, binding.encode()), False)
        .sign(ca_key, hashes.SHA256())
    )


_KEY_AGREEMENT_ONLY = x509.KeyUsage(
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


class CertificateRejected(Exception):
    """The card refuses an OCE chain; ``sw`` is what it answers."""

    def __init__(self, sw: SW, reason: str) -> None:
        super().__init__(reason)
        self.sw = sw


def load_der_strict(der: bytes) -> x509.Certificate:
    """Parse a DER certificate, treating what ``cryptography`` merely warns about
    (e.g. a non-positive serial, RFC 5280 §4.1.2.2) as malformed: a card does not
    accept "will be an error in a future release"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            cert = x509.load_der_x509_certificate(der)
            # Parsing is lazy: touch what the checks will read so that a broken
            # extension or key fails here, as "malformed", and not mid-verification.
            _ = cert.extensions, cert.public_key()
        except Exception as exc:  # InvalidVersion, DuplicateExtension, Unsupported...
            # Every way a peer's bytes can fail to be a certificate means one thing.
            raise ValueError("not a valid RFC 5280 certificate") from exc
    return cert


def _check_time(cert: x509.Certificate, now: dt.datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateRejected(SW.DATA_INVALID, "certificate outside its validity")


def verify_oce_chain(
    chain: Sequence[bytes],
    trust_anchor: x509.Certificate,
    *,
    now: float,
    expected_identity: bytes,
) -> ec.EllipticCurvePublicKey:
    """The card's four checks on a leaf-last OCE chain; returns PK.OCE.ECKA."""
    if not 0 < len(chain) <= MAX_CHAIN_LENGTH or any(len(c) > MAX_CERT_SIZE for c in chain):
        raise CertificateRejected(SW.WRONG_DATA, "chain size")
    try:
        certs = [load_der_strict(der) for der in chain]
    except ValueError:
        raise CertificateRejected(SW.WRONG_DATA, "undecodable certificate") from None
    if certs[0] == trust_anchor and len(certs) > 1:
        certs = certs[1:]  # a host may send the anchor itself first; it proves nothing
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    _check_time(trust_anchor, when)
    issuer = trust_anchor
    for index, cert in enumerate(certs):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRejected(SW.SECURITY_STATUS_NOT_SATISFIED, "untrusted") from None
        if index < len(certs) - 1 and not _is_ca(cert):
            raise CertificateRejected(SW.SECURITY_STATUS_NOT_SATISFIED, "issuer is not a CA")
        _check_time(cert, when)
        issuer = cert
    leaf = certs[-1]
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRejected(SW.CONDITIONS_NOT_SATISFIED, "no key usage") from None
    if usage != _KEY_AGREEMENT_ONLY:
        raise CertificateRejected(SW.CONDITIONS_NOT_SATISFIED, "key usage is not keyAgreement")
    try:
        raw = leaf.extensions.get_extension_for_oid(ORIGIN_BINDING_OID).value
        if not isinstance(raw, x509.UnrecognizedExtension):
            raise ValueError("unexpected extension type")
        binding = OriginBinding.decode(raw.value)
    except (x509.ExtensionNotFound, ValueError):
        raise CertificateRejected(SW.WRONG_DATA, "no origin binding") from None
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise CertificateRejected(SW.WRONG_DATA, "OCE key is not P-256")
    # Both digests are public, but comparing in constant time costs nothing and
    # keeps the rule "no early-exit compare on anything a MAC or identity" simple.
    if not hmac.compare_digest(binding.origin_digest, expected_identity):
        raise CertificateRejected(SW.REFERENCE_DATA_NOT_FOUND, "origin mismatch")
    return public_key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
