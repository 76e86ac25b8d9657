"""The emulated card: ATR, ISO 7816-4 transport behaviour, applet, persistent state."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from hatchway.errors import ConfigurationError, LocalProtocolError
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.se import (
    HATCHWAY_AID,
    SD_AID,
    SW,
    AppletIns,
    CardStateFile,
    CommandApdu,
    SoftCard,
    transceive,
)
from hatchway.se.applet import sign_message
from hatchway.se.emulator import build_atr

from .conftest import Pki
from .test_handshake import open_channel, select_applet, send


def test_atr_is_well_formed(card: SoftCard) -> None:
    atr = card.reset()
    assert atr[0] == 0x3B and atr[1] & 0x0F == len(b"hatchway")
    tck = 0
    for b in atr[1:]:
        tck ^= b
    assert tck == 0  # ISO 7816-3 §8.2.5: XOR over T0..TCK is zero
    with pytest.raises(ValueError):
        build_atr(b"x" * 16)


def test_unpowered_card_refuses_to_talk(card: SoftCard) -> None:
    card.power_off()
    with pytest.raises(LocalProtocolError):
        card.transmit(bytes.fromhex("00a40400"))


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00", SW.WRONG_LENGTH),
        ("00a4040003a000", SW.WRONG_LENGTH),
        ("ffca000000", SW.CLA_NOT_SUPPORTED),
        ("01a4040000", SW.LOGICAL_CHANNEL_NOT_SUPPORTED),
        ("40a4040000", SW.CLA_NOT_SUPPORTED),
        ("00a4040005f000000000", SW.FILE_NOT_FOUND),
        ("00a4000000", SW.INCORRECT_P1P2),
        ("00c0000000", SW.CONDITIONS_NOT_SATISFIED),
        ("80ca004200", SW.REFERENCE_DATA_NOT_FOUND),  # IIN: not held (0066 is, issue 7)
        ("80cabf2104a6028301", SW.WRONG_DATA),
        ("80cabf2106a6048302210100", SW.REFERENCE_DATA_NOT_FOUND),
        ("80cabf2106a6048302110900", SW.REFERENCE_DATA_NOT_FOUND),
        ("80cabf2104a602830000", SW.WRONG_DATA),
        ("80e2000000", SW.INS_NOT_SUPPORTED),
        ("001e000000", SW.INS_NOT_SUPPORTED),
        ("801e010000", SW.INCORRECT_P1P2),
        ("801e000002ffff", SW.WRONG_DATA),
        ("802a00000130", SW.COMMAND_NOT_ALLOWED),
        ("802a00800130", SW.OK),
        ("802a05100130", SW.REFERENCE_DATA_NOT_FOUND),
        ("80820211", SW.REFERENCE_DATA_NOT_FOUND),
        ("80820120", SW.INCORRECT_P1P2),
        ("80820113", SW.INCORRECT_P1P2),
        ("80880111", SW.INCORRECT_P1P2),
        ("8088011302a600", SW.WRONG_DATA),
    ],
)
def test_documented_refusals(card: SoftCard, apdu: str, sw: SW) -> None:
    assert card.transmit(bytes.fromhex(apdu)) == sw.to_bytes(2, "big")


def test_select_returns_fci_and_p2_0c_suppresses_it(card: SoftCard) -> None:
    fci = transceive(card.transmit, CommandApdu(0, 0xA4, 4, 0, HATCHWAY_AID)).check()
    assert fci.startswith(b"\x6f") and HATCHWAY_AID in fci
    assert card.transmit(CommandApdu(0, 0xA4, 4, 0x0C, SD_AID).encode()) == b"\x90\x00"
    assert SD_AID in transceive(card.transmit, CommandApdu(0, 0xA4, 4, 0)).check()


def test_long_answers_come_back_through_61xx(card: SoftCard) -> None:
    short = transceive(
        card.transmit, CommandApdu(0x80, 0xCA, 0xBF, 0x21, le=256), short_only=True
    ).check()
    assert short == card.state.sd_certificate.public_bytes(Encoding.DER)
    first = card.transmit(CommandApdu(0x80, 0xCA, 0xBF, 0x21, le=256).encode())
    if len(short) > 256:
        assert first[-2] == 0x61
    # Any other command discards the pending answer.
    card.transmit(CommandApdu(0, 0xA4, 4, 0x0C, SD_AID).encode())
    assert card.transmit(bytes.fromhex("00c0000000")) == bytes.fromhex("6985")


def test_broken_command_chain(card: SoftCard) -> None:
    assert card.transmit(CommandApdu(0x90, 0x2A, 0, 0x80, b"a").encode()) == b"\x90\x00"
    assert card.transmit(CommandApdu(0x80, 0xCA, 0, 0, b"b").encode()) == bytes.fromhex("6883")


def test_sign_challenge_counts_and_verifies(card: SoftCard, pki: Pki) -> None:
    channel = open_channel(card, pki)
    public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), send(card, channel, AppletIns.GET_PUBLIC_KEY).check()
    )
    challenge = b"c" * 32
    for expected in (1, 2):
        answer = send(card, channel, AppletIns.SIGN_CHALLENGE, challenge).check()
        counter = int.from_bytes(answer[:4], "big")
        assert counter == expected
        public.verify(answer[4:], sign_message(counter, challenge), ec.ECDSA(hashes.SHA256()))
    assert send(card, channel, AppletIns.READ_COUNTER).check() == (2).to_bytes(4, "big")
    assert send(card, channel, AppletIns.SIGN_CHALLENGE, b"short").sw == SW.WRONG_LENGTH
    assert send(card, channel, AppletIns.READ_SECRET).sw == SW.REFERENCE_DATA_NOT_FOUND
    assert send(card, channel, AppletIns.STORE_SECRET, b"").sw == SW.WRONG_LENGTH
    assert send(card, channel, AppletIns.READ_COUNTER, b"x").sw == SW.WRONG_LENGTH
    assert send(card, channel, 0x7F).sw == SW.INS_NOT_SUPPORTED


def test_state_persists_across_restarts(card_path: Path, pki: Pki) -> None:
    clock = FrozenClock(1_700_000_000.0)
    first = SoftCard.from_file(card_path, clock=clock, random=SeededRandom(b"boot1"))
    first.power_on()
    channel = open_channel(first, pki)
    send(first, channel, AppletIns.STORE_SECRET, b"kept").check()
    send(first, channel, AppletIns.SIGN_CHALLENGE, b"c" * 16).check()
    assert stat.S_IMODE(card_path.stat().st_mode) == 0o600
    assert [p.name for p in card_path.parent.iterdir()] == [card_path.name]  # no temp left

    second = SoftCard.from_file(card_path, clock=clock, random=SeededRandom(b"boot2"))
    assert second.power_on() == first.atr
    assert not second.channel_open  # sessions never survive power loss
    channel = open_channel(second, pki)
    assert send(second, channel, AppletIns.READ_SECRET).check() == b"kept"
    assert send(second, channel, AppletIns.READ_COUNTER).check() == (1).to_bytes(4, "big")
    assert second.state.sd_certificate == first.state.sd_certificate


def test_damaged_or_missing_state_file(tmp_path: Path, card_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        CardStateFile(tmp_path / "absent.json").load()
    doc = json.loads(card_path.read_text())
    for key, value in (("version", 99), ("counter", -1), ("sd_key", "nonsense")):
        broken = tmp_path / f"broken-{key}.json"
        broken.write_text(json.dumps({**doc, key: value}))
        with pytest.raises(ConfigurationError):
            CardStateFile(broken).load()
    assert CardStateFile(card_path).exists()


def test_select_during_a_channel_ends_it(card: SoftCard, pki: Pki) -> None:
    open_channel(card, pki)
    select_applet(card)
    assert not card.channel_open
