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

Only ``originDigest`` is checked, by the card against the origin the bridge read.
``tlsSpkiDigest`` is informational: neither the card nor the bridge checks it (the
bridge cannot see the page's TLS connection), so it binds nothing.

The certificate is keyAgreement-only with the OCE EKU of ``certprofile``. The
card-side check (``verify_oce_chain``) refuses with one status word per kind of
failure, so an operator can tell what is wrong (certificates are public, so the
distinction leaks nothing secret):

* ``6A80 WRONG_DATA``: a certificate is unparsable, the leaf has no origin binding,
  or its key is not P-256;
* ``6982 SECURITY_STATUS_NOT_SATISFIED``: the chain is not valid under the trust
  anchor — a bad signature, a signature algorithm other than ECDSA with SHA-256/384,
  an issuer that is not CA=true with keyCertSign, a pathLen exceeded, or an unknown
  critical extension (RFC 5280 §6.1);
* ``6984 DATA_INVALID``: a certificate is expired or not yet valid (card clock);
* ``6985 CONDITIONS_NOT_SATISFIED``: the leaf's keyUsage is not keyAgreement only,
  the leaf is a CA, or its EKU (if present) has neither the OCE EKU nor
  anyExtendedKeyUsage;
* ``6A88 REFERENCE_DATA_NOT_FOUND``: the identity value differs from the bridge's
  origin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import idna
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hatchway.errors import LocalProtocolError

from .certprofile import (
    KEY_AGREEMENT_ONLY,
    OCE_ECKA_EKU,
    SIGNATURE_ALGORITHMS,
    unknown_critical,
)
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


def web_origin(url: str) -> str:
    """The serialised origin (scheme, host, port; RFC 6454 §4) of an absolute URL.

    A public base URL may carry a path (``https://example.com/hatchway``); its origin
    does not. Userinfo is refused rather than dropped.
    """
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError("a URL with userinfo does not name a web origin")
    return serialize_origin(f"{parts.scheme}://{parts.netloc}")


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


def origin_binding_of(cert: x509.Certificate) -> OriginBinding:
    """The certificate's origin binding; ``ExtensionNotFound`` or ``ValueError`` if none."""
    raw = cert.extensions.get_extension_for_oid(ORIGIN_BINDING_OID).value
    if not isinstance(raw, x509.UnrecognizedExtension):
        raise ValueError("unexpected extension type")
    return OriginBinding.decode(raw.value)


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
        .add_extension(KEY_AGREEMENT_ONLY, critical=True)
        .add_extension(x509.ExtendedKeyUsage([OCE_ECKA_EKU]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ORIGIN_BINDING_OID, binding.encode()), False)
        .sign(ca_key, hashes.SHA256())
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
    """The card's checks on a leaf-last OCE chain (RFC 5280 §6.1 subset); returns PK.OCE.ECKA."""
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
        # pathLen counts the intermediates below the issuer: ``cert`` and any after it
        # but the leaf.
        _check_issuer(issuer, intermediates_below=len(certs) - 1 - index,
                      anchor=issuer is trust_anchor)
        try:
            if cert.signature_algorithm_oid not in SIGNATURE_ALGORITHMS:
                raise ValueError("signature algorithm")
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRejected(SW.SECURITY_STATUS_NOT_SATISFIED, "untrusted") from None
        _check_time(cert, when)
        understood = _LEAF_UNDERSTOOD if index == len(certs) - 1 else _ISSUER_UNDERSTOOD
        if unknown_critical(cert, understood):
            raise CertificateRejected(SW.SECURITY_STATUS_NOT_SATISFIED, "unknown critical ext")
        issuer = cert
    leaf = certs[-1]
    _check_leaf_usage(leaf)
    try:
        binding = origin_binding_of(leaf)
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


_ISSUER_UNDERSTOOD = frozenset({
    x509.BasicConstraints.oid, x509.KeyUsage.oid,
})
_LEAF_UNDERSTOOD = frozenset({
    x509.BasicConstraints.oid, x509.KeyUsage.oid, x509.ExtendedKeyUsage.oid, ORIGIN_BINDING_OID,
})


def _check_issuer(issuer: x509.Certificate, *, intermediates_below: int, anchor: bool) -> None:
    """RFC 5280 §6.1.4 (k), (l), (m), (n): a CA, within its pathLen, allowed to sign certs."""
    untrusted = CertificateRejected(SW.SECURITY_STATUS_NOT_SATISFIED, "issuer may not issue")
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise untrusted from None
    if not constraints.ca:
        raise untrusted
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise untrusted
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        # The configured anchor may predate keyUsage; an intermediate must state it.
        if anchor:
            return
        raise untrusted from None
    if not usage.key_cert_sign:
        raise untrusted


def _check_leaf_usage(leaf: x509.Certificate) -> None:
    """keyAgreement only, not a CA, and an EKU (if any) that allows OCE key agreement."""
    wrong = CertificateRejected(SW.CONDITIONS_NOT_SATISFIED, "key usage is not OCE keyAgreement")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise wrong from None
    if usage != KEY_AGREEMENT_ONLY:
        raise wrong
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise wrong
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if OCE_ECKA_EKU not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        raise wrong
