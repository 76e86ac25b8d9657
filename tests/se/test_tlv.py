"""BER-TLV (ISO/IEC 7816-4 §6.3, X.690 §8.1): strict encode/parse and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.se import tlv
from hatchway.se.errors import MalformedTlv

TAGS = st.sampled_from([0x80, 0x83, 0x86, 0x90, 0x95, 0xA6, 0x5F49, 0x7F21, 0xBF21, 0x9F65, 0x30])


def test_encode_gp_key_agreement_objects() -> None:
    assert tlv.encode(0x90, b"\x11\x01") == bytes.fromhex("90021101")
    assert tlv.encode(0x5F49, b"\x04" * 65)[:4] == bytes.fromhex("5f494104")
    assert tlv.encode(0xBF21, b"x" * 200)[:5] == bytes.fromhex("bf2181c8") + b"x"
    assert tlv.encode(0x30, b"y" * 300)[:4] == bytes.fromhex("3082012c")


def test_nested_parse_and_find() -> None:
    inner = tlv.encode_many([(0x90, b"\x11\x03"), (0x95, b"\x3c")])
    outer = tlv.parse_exact(tlv.encode(0xA6, inner))
    assert outer.constructed
    children = outer.children()
    assert tlv.find(children, 0x95).value == b"\x3c"
    with pytest.raises(MalformedTlv):
        tlv.find(children, 0x80)
    with pytest.raises(MalformedTlv):
        tlv.find(children + children, 0x90)
    with pytest.raises(MalformedTlv):
        tlv.Tlv(0x90, b"").children()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("8080", "indefinite length"),
        ("908105" + "00" * 5, "non-minimal long length"),
        ("90820005" + "00" * 5, "non-minimal two-byte length"),
        ("9084000000010000", "four length bytes"),
        ("1f0500", "long-form tag for a number below 31"),
        ("5f8049" + "00", "leading zero group in tag"),
        ("5fffff0100", "tag longer than three bytes"),
        ("9003aabb", "value past the end"),
        ("00", "padding byte"),
        ("ff", "padding byte"),
        ("5f", "truncated tag"),
        ("90", "missing length"),
        ("9082", "truncated length"),
    ],
)
def test_strict_rejections(raw: str, why: str) -> None:
    with pytest.raises(MalformedTlv):
        tlv.parse_all(bytes.fromhex(raw))


def test_trailing_garbage_and_depth() -> None:
    with pytest.raises(MalformedTlv):
        tlv.parse_exact(bytes.fromhex("900100" + "86"))
    with pytest.raises(MalformedTlv):
        tlv.unpack(0x86, bytes.fromhex("900100"))
    nested = b""
    for _ in range(tlv.MAX_DEPTH + 2):
        nested = tlv.encode(0xA6, nested) if nested else tlv.encode(0x80, b"")
    with pytest.raises(MalformedTlv, match="deep"):
        tlv.parse_all(nested)


def test_encoder_refuses_invalid_tags() -> None:
    for bad in (0, 0x1F05, 0x5F8049, -1):
        with pytest.raises(ValueError):
            tlv.encode(bad, b"")


@given(st.lists(st.tuples(TAGS, st.binary(max_size=300)), max_size=5))
def test_round_trip(items: list[tuple[int, bytes]]) -> None:
    # Constructed tags need valid content to round-trip, so wrap values as primitives.
    fixed = [(t, tlv.encode(0x80, v) if tlv.Tlv(t, v).constructed else v) for t, v in items]
    parsed = tlv.parse_all(tlv.encode_many(fixed))
    assert [(p.tag, p.value) for p in parsed] == fixed


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_malformed_tlv(data: bytes) -> None:
    try:
        items = tlv.parse_all(data)
    except MalformedTlv:
        return
    assert b"".join(item.encode() for item in items) == data  # strict: one encoding only


@given(st.lists(st.tuples(TAGS, st.binary(max_size=40)), min_size=1, max_size=4), st.data())
def test_truncations_are_refused(items: list[tuple[int, bytes]], data: st.DataObject) -> None:
    fixed = [(t, tlv.encode(0x80, v) if tlv.Tlv(t, v).constructed else v) for t, v in items]
    encoded = tlv.encode_many(fixed)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    try:
        parsed = tlv.parse_all(encoded[:cut])
    except MalformedTlv:
        return
    # A cut that lands exactly between objects is a shorter, valid list.
    assert [(p.tag, p.value) for p in parsed] == fixed[: len(parsed)]
