"""Interop: yubikit's GP SCP11 host (an independent implementation) opens channels
with the hatchway emulator and exchanges secure-messaged APDUs.

yubikit drives the card through ``SmartCardConnection.send_and_receive`` exactly as
it drives a YubiKey over PC/SC: over "USB" it uses extended APDUs, over "NFC"
short APDUs with command chaining and GET RESPONSE.
"""

from __future__ import annotations

from tests.services import require_module

require_module("yubikit", extra="interop")  # before the imports below need it

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from yubikit.core import TRANSPORT, Oid, Tlv
from yubikit.core.smartcard import ApduError as YkApduError
from yubikit.core.smartcard import SmartCardConnection, SmartCardProtocol
from yubikit.core.smartcard.scp import KeyRef as YkKeyRef
from yubikit.core.smartcard.scp import Scp11KeyParams, ScpKid
from yubikit.securitydomain import SecurityDomainSession

from hatchway.se import HATCHWAY_AID, AppletIns, SoftCard

from .conftest import Pki


class EmulatorConnection(SmartCardConnection):
    def __init__(self, card: SoftCard, transport: TRANSPORT) -> None:
        self.card = card
        self._transport = transport
        self.apdus: list[bytes] = []
        self.status_words: list[int] = []

    @property
    def transport(self) -> TRANSPORT:
        return self._transport

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        self.apdus.append(apdu)
        response = self.card.transmit(apdu)
        self.status_words.append(int.from_bytes(response[-2:], "big"))
        return response[:-2], self.status_words[-1]


def _sd_public_key(card: SoftCard) -> ec.EllipticCurvePublicKey:
    key = card.state.sd_certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _params(kid: ScpKid, card: SoftCard, pki: Pki) -> Scp11KeyParams:
    ref = YkKeyRef(kid, card.state.sd_kvn)
    if kid == ScpKid.SCP11b:
        return Scp11KeyParams(ref, _sd_public_key(card))
    return Scp11KeyParams(
        ref,
        _sd_public_key(card),
        YkKeyRef(0x10, card.state.ca_kvn),
        pki.oce_key,
        [pki.oce_cert],
    )


@pytest.mark.parametrize("transport", [TRANSPORT.USB, TRANSPORT.NFC])
def test_yubikit_reads_certificate_store_then_scp11b_get_data(
    card: SoftCard, transport: TRANSPORT
) -> None:
    session = SecurityDomainSession(EmulatorConnection(card, transport))
    bundle = session.get_certificate_bundle(YkKeyRef(ScpKid.SCP11b, card.state.sd_kvn))
    assert bundle == [card.state.sd_certificate]
    session.authenticate(Scp11KeyParams(YkKeyRef(ScpKid.SCP11b, 1), bundle[-1].public_key()))
    assert card.channel_open
    # The certificate store again, now encrypted and MAC'ed both ways.
    again = session.get_certificate_bundle(YkKeyRef(ScpKid.SCP11b, card.state.sd_kvn))
    assert again == bundle


@pytest.mark.parametrize("kid", [ScpKid.SCP11a, ScpKid.SCP11c])
@pytest.mark.parametrize("transport", [TRANSPORT.USB, TRANSPORT.NFC])
def test_yubikit_scp11ac_provisions_and_reads_back_a_secret(
    card: SoftCard, pki: Pki, kid: ScpKid, transport: TRANSPORT
) -> None:
    card.set_origin("https://localhost:8443")
    connection = EmulatorConnection(card, transport)
    protocol = SmartCardProtocol(connection)
    protocol.select(HATCHWAY_AID)
    protocol.init_scp(_params(kid, card, pki))
    secret = bytes(range(256)) * 2  # > 255 bytes: chaining on NFC, extended on USB
    protocol.send_apdu(0x80, AppletIns.STORE_SECRET, 0, 0, secret)
    assert protocol.send_apdu(0x80, AppletIns.READ_SECRET, 0, 0) == secret
    assert protocol.send_apdu(0x80, AppletIns.READ_COUNTER, 0, 0) == bytes(4)
    # The plaintext never crossed the wire.
    assert not any(secret[:32] in apdu for apdu in connection.apdus)
    assert card.state.secret == secret


def test_yubikit_scp11b_cannot_read_secrets(card: SoftCard, pki: Pki) -> None:
    protocol = SmartCardProtocol(EmulatorConnection(card, TRANSPORT.USB))
    protocol.select(HATCHWAY_AID)
    protocol.init_scp(_params(ScpKid.SCP11b, card, pki))
    assert protocol.send_apdu(0x80, AppletIns.READ_COUNTER, 0, 0) == bytes(4)
    with pytest.raises(YkApduError) as refused:
        protocol.send_apdu(0x80, AppletIns.READ_SECRET, 0, 0)
    assert refused.value.sw == 0x6982


def test_yubikit_scp11a_refused_for_a_phishing_origin(card: SoftCard, pki: Pki) -> None:
    card.set_origin("https://login-hatchway.example")
    connection = EmulatorConnection(card, TRANSPORT.USB)
    protocol = SmartCardProtocol(connection)
    protocol.select(HATCHWAY_AID)
    # yubikit turns 6A88 into "Incorrect SCP parameters"; the wire shows the SW.
    with pytest.raises(ValueError, match="Incorrect SCP parameters"):
        protocol.init_scp(_params(ScpKid.SCP11a, card, pki))
    assert connection.status_words[-1] == 0x6A88
    assert not card.channel_open


@pytest.mark.parametrize("transport", [TRANSPORT.USB, TRANSPORT.NFC])
def test_yubikit_discovers_the_scp11_key_references_then_opens_scp11b_and_a(
    card: SoftCard, pki: Pki, transport: TRANSPORT
) -> None:
    """Issue 7 item 8: the emulator answered 6A88 to GET DATA 00E0, so a standard host
    needed the SD's key reference out of band. Here everything but the OCE's own key
    and certificate comes from the card."""
    card.set_origin("https://localhost:8443")
    session = SecurityDomainSession(EmulatorConnection(card, transport))
    info = session.get_key_information()
    by_kid = {ref.kid: ref for ref in info}
    assert set(by_kid) == {ScpKid.SCP11a, ScpKid.SCP11b, ScpKid.SCP11c, 0x10}
    # SK.SD.ECKA: a P-256 private key (B1, 32 bytes; F0 curve reference 00 = P-256).
    assert info[by_kid[ScpKid.SCP11b]] == {0xB1: 32, 0xF0: 0x00}
    assert info[by_kid[0x10]] == {0xB0: 65, 0xF0: 0x00}  # PK.CA-KLOC.ECDSA
    ref_b = by_kid[ScpKid.SCP11b]
    bundle = session.get_certificate_bundle(ref_b)
    session.authenticate(Scp11KeyParams(ref_b, bundle[-1].public_key()))
    assert card.channel_open
    # A fresh session (re-SELECT ends the channel), now SCP11a with the discovered refs.
    session = SecurityDomainSession(EmulatorConnection(card, transport))
    info = session.get_key_information()
    ref_a = next(ref for ref in info if ref.kid == ScpKid.SCP11a)
    kloc = next(ref for ref in info if ref.kid == 0x10)
    bundle = session.get_certificate_bundle(ref_a)
    session.authenticate(
        Scp11KeyParams(ref_a, bundle[-1].public_key(), kloc, pki.oce_key, [pki.oce_cert])
    )
    assert card.channel_open


def test_yubikit_reads_card_recognition_data_and_cplc(card: SoftCard) -> None:
    session = SecurityDomainSession(EmulatorConnection(card, TRANSPORT.USB))
    recognition = Tlv.parse_list(session.get_card_recognition_data())
    assert Oid(recognition[0].value).dotted_string == "1.2.840.114283.1"  # GP card
    oids = [(t.tag, Oid(Tlv(t.value).value).dotted_string) for t in recognition[1:]]
    assert oids[:2] == [
        (0x60, "1.2.840.114283.2.2.3.1"),  # GP Card Spec v2.3.1
        (0x63, "1.2.840.114283.3"),
    ]
    scps = [oid for tag, oid in oids if tag == 0x64]
    assert scps == [f"1.2.840.114283.4.17.{i}" for i in (1, 0, 3)]  # SCP '11', i = tag 90
    cplc = Tlv.unpack(0x9F7F, session.get_data(0x9F7F))
    assert len(cplc) == 42
    assert cplc[12:16] == bytes.fromhex(card.state.serial)[:4]  # IC serial number
