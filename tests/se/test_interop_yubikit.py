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
from yubikit.core import TRANSPORT
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
