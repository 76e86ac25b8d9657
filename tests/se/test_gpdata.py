"""GP discovery data objects (GP Card Spec v2.3.1 §11.3.3.1, §H.2; CPLC), sans-I/O,
and the emulator's GET DATA answers for them (issue 7 item 8)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.se import SW, CommandApdu, ResponseApdu, SoftCard, tlv
from hatchway.se.errors import MalformedTlv
from hatchway.se.gpdata import (
    CPLC_LENGTH,
    KeyInfo,
    card_recognition_data,
    encode_key_information,
    parse_cplc,
    parse_key_information,
    sd_cplc,
    sd_key_information,
)
from hatchway.se.gpdata.objects import cplc_date, encode_oid


def test_key_information_template_shapes() -> None:
    keys = sd_key_information(sd_kvn=1, ca_kvn=3)
    bare = encode_key_information(keys, wrapped=False)
    # C0 06 | kid kvn | B1 20 (ECC private, 32 bytes) | F0 00 (P-256)
    assert bare.startswith(bytes.fromhex("C006 1101 B120 F000 C006 1301 B120 F000"))
    assert bare.endswith(bytes.fromhex("C006 1003 B041 F000"))  # PK.CA-KLOC, 65-byte point
    wrapped = encode_key_information(keys, wrapped=True)
    assert wrapped == tlv.encode(0xE0, bare)
    assert parse_key_information(bare) == parse_key_information(wrapped) == keys
    assert [k.kid for k in keys] == [0x11, 0x13, 0x15, 0x10]


@pytest.mark.parametrize(
    "bad", ["C00111", "C0031101B1", "C1021101", "E003C00111", "C0041101B120FF"]
)
def test_key_information_parser_is_strict(bad: str) -> None:
    with pytest.raises(MalformedTlv):
        parse_key_information(bytes.fromhex(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_key_information_parser_only_raises_malformed_tlv(data: bytes) -> None:
    try:
        keys = parse_key_information(data)
    except MalformedTlv:
        return
    assert encode_key_information(keys, wrapped=False) == data or data[:1] == b"\xe0"


def test_cplc_shape_and_dates() -> None:
    assert cplc_date(dt.date(2023, 11, 14)) == bytes.fromhex("3318")
    assert cplc_date(dt.date(2030, 1, 1)) == bytes.fromhex("0001")
    cplc = sd_cplc("0956747f0102a0b1", dt.date(2026, 12, 1))
    assert cplc[:3] == bytes.fromhex("9F7F2A") and len(cplc) == 3 + CPLC_LENGTH == 45
    fields = parse_cplc(cplc)
    assert fields["ic_serial_number"] == bytes.fromhex("0956747f")
    assert fields["ic_batch_identifier"] == bytes.fromhex("0102")
    assert fields["ic_personalization_date"] == bytes.fromhex("6335")
    assert fields["ic_fabricator"] == bytes(2)  # an emulator has no registered id
    with pytest.raises(MalformedTlv):
        parse_cplc(bytes.fromhex("9F7F01") + b"\x00")


def test_card_recognition_data_shape() -> None:
    assert encode_oid("1.2.840.114283.1") == bytes.fromhex("2A864886FC6B01")
    assert encode_oid("2.999.3") == bytes.fromhex("883703")  # X.690 §8.19.5 example
    with pytest.raises(ValueError):
        encode_oid("1.40")
    bare = card_recognition_data(wrapped=False)
    outer = tlv.parse_exact(bare)
    assert outer.tag == 0x73
    assert [c.tag for c in outer.children()] == [0x06, 0x60, 0x63, 0x64, 0x64, 0x64]
    assert card_recognition_data(wrapped=True) == tlv.encode(0x66, bare)


def get_data(card: SoftCard, cla: int, p1p2: int, data: bytes = b"") -> ResponseApdu:
    cmd = CommandApdu(cla, 0xCA, p1p2 >> 8, p1p2 & 0xFF, data, le=256)
    return ResponseApdu.parse(card.transmit(cmd.encode()))


def test_emulator_answers_discovery_get_data_in_both_conventions(card: SoftCard) -> None:
    """Regression: GET DATA 00E0 was answered 6A88."""
    gp = get_data(card, 0x80, 0x00E0)
    iso = get_data(card, 0x00, 0x00E0)
    assert gp.sw == iso.sw == SW.OK
    assert gp.data == tlv.encode(0xE0, iso.data)
    keys = parse_key_information(iso.data)
    assert KeyInfo(0x13, card.state.sd_kvn, ((0xB1, 32), (0xF0, 0))) in keys
    assert get_data(card, 0x80, 0x0066).data == tlv.encode(0x66, get_data(card, 0, 0x66).data)
    cplc = get_data(card, 0x80, 0x9F7F)
    assert (
        cplc.sw == SW.OK
        and parse_cplc(cplc.data)["ic_serial_number"] == bytes.fromhex(card.state.serial)[:4]
    )
    assert get_data(card, 0x80, 0x00E0, b"\x5c\x00").sw == SW.WRONG_DATA
    assert get_data(card, 0x80, 0x0042).sw == SW.REFERENCE_DATA_NOT_FOUND
