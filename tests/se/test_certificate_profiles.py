"""Certificate profiles: the card's RFC 5280 chain checks on the OCE chain (appcert)
and the host's secure-element profile check on the card (certprofile).

Each forged certificate below is what an attacker holding *some* key certified by
(or chained to) the trust anchor would try; each must be refused with the status
word documented in ``appcert`` (card side) or the opaque ``UntrustedCard`` (host side).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hatchway.errors import LocalProtocolError
from hatchway.runtime import SeededRandom
from hatchway.se import ApduError, Scp11Host, Scp11Variant, SoftCard
from hatchway.se.appcert import (
    ORIGIN_BINDING_OID,
    CertificateRejected,
    OriginBinding,
    origin_identity,
    verify_oce_chain,
    web_origin,
)
from hatchway.se.bridge import transmit_whole
from hatchway.se.certprofile import (
    KEY_AGREEMENT_ONLY,
    OCE_ECKA_EKU,
    SE_ECKA_EKU,
    UntrustedCard,
    verify_card_certificate,
)
from hatchway.se.constants import SW
from hatchway.se.scp11_host import INSECURE_SKIP_CARD_VERIFICATION

from .conftest import NOW, ORIGIN, Pki, make_ca

START = dt.datetime.fromtimestamp(NOW, dt.UTC)
SHA256 = hashes.SHA256()
LEAF_BC = x509.BasicConstraints(ca=False, path_length=None)
CERT_SIGN = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
BINDING = x509.UnrecognizedExtension(
    ORIGIN_BINDING_OID, OriginBinding(origin_identity(ORIGIN)).encode()
)
Ext = tuple[x509.ExtensionType, bool]


def cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    exts: Sequence[Ext],
    algorithm: hashes.HashAlgorithm = SHA256,
) -> x509.Certificate:
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START - dt.timedelta(days=1))
        .not_valid_after(START + dt.timedelta(days=30))
    )
    for ext, critical in exts:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(signer, algorithm)


@pytest.fixture(scope="module")
def root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An anchor like hatchway's dev CA: CA=true, pathLen 0, keyCertSign."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, cert(
        "root",
        "root",
        key,
        key,
        [(x509.BasicConstraints(ca=True, path_length=0), True), (CERT_SIGN, True)],
    )


def leaf(
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *extra: Ext,
    usage: x509.KeyUsage = KEY_AGREEMENT_ONLY,
    bc: x509.BasicConstraints = LEAF_BC,
    algorithm: hashes.HashAlgorithm = SHA256,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return cert(
        "leaf",
        issuer,
        key,
        signer,
        [(bc, True), (usage, True), (BINDING, False), *extra],
        algorithm,
    )


def card_answer(chain: Sequence[x509.Certificate], anchor: x509.Certificate) -> SW:
    der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    try:
        verify_oce_chain(der, anchor, now=NOW, expected_identity=origin_identity(ORIGIN))
    except CertificateRejected as rejected:
        return rejected.sw
    return SW.OK


def intermediate(
    root_key: ec.EllipticCurvePrivateKey, *exts: Ext
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, cert("inter", "root", key, root_key, exts)


def test_genuine_chain_is_accepted(
    root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
) -> None:
    key, anchor = root
    eku = (x509.ExtendedKeyUsage([OCE_ECKA_EKU]), False)
    assert card_answer([leaf("root", key)], anchor) == SW.OK
    assert card_answer([leaf("root", key, eku)], anchor) == SW.OK


def test_anchor_path_length_zero_forbids_an_intermediate(
    root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
) -> None:
    key, anchor = root
    ik, inter = intermediate(
        key, (x509.BasicConstraints(ca=True, path_length=None), True), (CERT_SIGN, True)
    )
    assert card_answer([inter, leaf("inter", ik)], anchor) == SW.SECURITY_STATUS_NOT_SATISFIED


@pytest.mark.parametrize(
    "exts",
    [
        # not a CA at all
        [(LEAF_BC, True), (CERT_SIGN, True)],
        # no BasicConstraints
        [(CERT_SIGN, True)],
        # a CA whose keyUsage does not allow certificate signing
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        ],
        # a CA without keyUsage
        [(x509.BasicConstraints(ca=True, path_length=None), True)],
    ],
)
def test_intermediates_must_be_cas_allowed_to_sign(exts: list[Ext]) -> None:
    rk = ec.generate_private_key(ec.SECP256R1())
    anchor = make_ca("hatchway test CA", NOW, rk)  # pathLen 1: one intermediate is fine
    ik, inter = cert_pair("inter", "hatchway test CA", rk, exts)
    assert card_answer([inter, leaf("inter", ik)], anchor) == SW.SECURITY_STATUS_NOT_SATISFIED
    good_key, good = cert_pair(
        "inter",
        "hatchway test CA",
        rk,
        [(x509.BasicConstraints(ca=True, path_length=0), True), (CERT_SIGN, True)],
    )
    assert card_answer([good, leaf("inter", good_key)], anchor) == SW.OK


def cert_pair(
    subject: str, issuer: str, signer: ec.EllipticCurvePrivateKey, exts: Sequence[Ext]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, cert(subject, issuer, key, signer, exts)


def test_intermediate_path_length_is_enforced() -> None:
    rk = ec.generate_private_key(ec.SECP256R1())
    anchor = make_ca("hatchway test CA", NOW, rk)
    ak, a = cert_pair(
        "a",
        "hatchway test CA",
        rk,
        [(x509.BasicConstraints(ca=True, path_length=0), True), (CERT_SIGN, True)],
    )
    bk, b = cert_pair(
        "b", "a", ak, [(x509.BasicConstraints(ca=True, path_length=None), True), (CERT_SIGN, True)]
    )
    assert card_answer([a, b, leaf("b", bk)], anchor) == SW.SECURITY_STATUS_NOT_SATISFIED


UNKNOWN = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")


@pytest.mark.parametrize(
    ("extra", "kwargs", "sw"),
    [
        ([(UNKNOWN, True)], {}, SW.SECURITY_STATUS_NOT_SATISFIED),
        (
            [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
            {},
            SW.CONDITIONS_NOT_SATISFIED,
        ),
        (
            [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True)],
            {},
            SW.CONDITIONS_NOT_SATISFIED,
        ),
        ([(x509.ExtendedKeyUsage([SE_ECKA_EKU]), False)], {}, SW.CONDITIONS_NOT_SATISFIED),
        ([], {"bc": x509.BasicConstraints(ca=True, path_length=None)}, SW.CONDITIONS_NOT_SATISFIED),
        ([], {"algorithm": hashes.SHA512()}, SW.SECURITY_STATUS_NOT_SATISFIED),
    ],
)
def test_leaf_forgeries_get_the_documented_status_word(
    root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    extra: list[Ext],
    kwargs: dict[str, object],
    sw: SW,
) -> None:
    key, anchor = root
    assert card_answer([leaf("root", key, *extra, **kwargs)], anchor) == sw  # type: ignore[arg-type]


def test_unknown_critical_extension_on_an_intermediate_voids_the_chain() -> None:
    rk = ec.generate_private_key(ec.SECP256R1())
    anchor = make_ca("hatchway test CA", NOW, rk)
    ik, inter = cert_pair(
        "inter",
        "hatchway test CA",
        rk,
        [(x509.BasicConstraints(ca=True, path_length=0), True), (CERT_SIGN, True), (UNKNOWN, True)],
    )
    assert card_answer([inter, leaf("inter", ik)], anchor) == SW.SECURITY_STATUS_NOT_SATISFIED


def test_se_certificate_from_personalisation_fits_the_profile(card: SoftCard, pki: Pki) -> None:
    sd = card.state.sd_certificate
    assert sd.extensions.get_extension_for_class(x509.KeyUsage).value == KEY_AGREEMENT_ONLY
    assert SE_ECKA_EKU in sd.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert verify_card_certificate(sd, pki.ca_cert, NOW) == sd.public_key()
    with pytest.raises(UntrustedCard):  # outside its validity
        verify_card_certificate(sd, pki.ca_cert, NOW + 20 * 365 * 86400)


@pytest.mark.parametrize(
    ("usage", "eku", "bc", "extra"),
    [
        (KEY_AGREEMENT_ONLY, None, LEAF_BC, []),  # keyAgreement but no SE EKU (an OCE cert)
        (KEY_AGREEMENT_ONLY, [OCE_ECKA_EKU], LEAF_BC, []),
        (KEY_AGREEMENT_ONLY, [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], LEAF_BC, []),
        (
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            [SE_ECKA_EKU],
            LEAF_BC,
            [],
        ),  # a signing key with the SE EKU
        (KEY_AGREEMENT_ONLY, [SE_ECKA_EKU], x509.BasicConstraints(ca=True, path_length=None), []),
        (KEY_AGREEMENT_ONLY, [SE_ECKA_EKU], LEAF_BC, [(UNKNOWN, True)]),
    ],
)
def test_host_refuses_card_certificates_outside_the_se_profile(
    pki: Pki,
    usage: x509.KeyUsage,
    eku: list[x509.ObjectIdentifier] | None,
    bc: x509.BasicConstraints,
    extra: list[Ext],
) -> None:
    exts: list[Ext] = [(bc, True), (usage, True), *extra]
    if eku is not None:
        exts.append((x509.ExtendedKeyUsage(eku), False))
    key = ec.generate_private_key(ec.SECP256R1())
    forged = cert("card", "hatchway test CA", key, pki.ca_key, exts)
    with pytest.raises(UntrustedCard) as err:
        verify_card_certificate(forged, pki.ca_cert, NOW)
    assert str(err.value) == "invalid message"  # opaque
    with pytest.raises(UntrustedCard):
        Scp11Host(
            Scp11Variant.A,
            card_certificates=[forged],
            trust_anchor=pki.ca_cert,
            random=SeededRandom(b"h"),
            now=NOW,
            oce_chain=[pki.oce_cert],
            oce_key=pki.oce_key,
        )


def test_host_has_no_silent_unverified_mode(card: SoftCard, pki: Pki) -> None:
    common: dict[str, object] = {
        "random": SeededRandom(b"h"),
        "now": NOW,
        "oce_chain": [pki.oce_cert],
        "oce_key": pki.oce_key,
    }
    with pytest.raises(TypeError):
        Scp11Host(Scp11Variant.A, card_certificates=[card.state.sd_certificate], **common)  # type: ignore[call-arg, arg-type]
    with pytest.raises(LocalProtocolError):
        Scp11Host(
            Scp11Variant.A,
            trust_anchor=None,  # type: ignore[arg-type]
            **common,
        )  # type: ignore[arg-type]
    # The opt-out exists for known-answer tests only, and says so.
    assert INSECURE_SKIP_CARD_VERIFICATION.name == "INSECURE_SKIP_CARD_VERIFICATION"


def test_host_reads_and_checks_the_card_certificate_in_the_same_batch(
    card: SoftCard, pki: Pki, other_pki: Pki
) -> None:
    card.set_origin(ORIGIN)
    host = Scp11Host(
        Scp11Variant.A,
        trust_anchor=pki.ca_cert,
        random=SeededRandom(b"h"),
        now=NOW,
        oce_chain=[pki.oce_cert],
        oce_key=pki.oce_key,
    )
    commands = host.handshake_commands()
    assert [c[1] for c in commands] == [0xCA, 0x2A, 0x82]  # GET DATA, PSO, MUTUAL AUTH
    channel = host.receive_responses([transmit_whole(card, c) for c in commands])
    assert host.card_certificates == [card.state.sd_certificate]
    assert channel.state.value == "open"
    # A card from another CA is refused before its answers are even looked at.
    card.reset()
    card.set_origin(ORIGIN)
    stranger = Scp11Host(
        Scp11Variant.A,
        trust_anchor=other_pki.ca_cert,
        random=SeededRandom(b"h2"),
        now=NOW,
        oce_chain=[pki.oce_cert],
        oce_key=pki.oce_key,
    )
    answers = [transmit_whole(card, c) for c in stranger.handshake_commands()]
    with pytest.raises(UntrustedCard):
        stranger.receive_responses(answers)
    # And a card that will not show its certificate is untrusted, not "refused".
    mute = Scp11Host(
        Scp11Variant.A,
        trust_anchor=pki.ca_cert,
        random=SeededRandom(b"h3"),
        now=NOW,
        oce_chain=[pki.oce_cert],
        oce_key=pki.oce_key,
    )
    mute.handshake_commands()
    with pytest.raises(UntrustedCard):
        mute.receive_responses([b"\x6a\x88", b"\x90\x00", b"\x69\x86"])
    assert not isinstance(UntrustedCard(), ApduError)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://localhost:8443", "https://localhost:8443"),
        ("https://se.example/hatchway", "https://se.example"),
        ("https://SE.example:443/a/b?c#d", "https://se.example"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
    ],
)
def test_web_origin_of_a_public_url_rfc6454_4(url: str, origin: str) -> None:
    assert web_origin(url) == origin


@pytest.mark.parametrize("url", ["https://user:pw@se.example/", "se.example/x", "ftp://a.b/"])
def test_web_origin_refuses_what_is_not_an_http_origin(url: str) -> None:
    with pytest.raises(ValueError):
        web_origin(url)
