"""Command/response APDUs (ISO/IEC 7816-4 §5.1), chaining (§5.3.3), GET RESPONSE (§5.3.4)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.se.apdu import (
    ChainAssembler,
    CommandApdu,
    ResponseApdu,
    ResponseQueue,
    chain,
    transceive,
)
from hatchway.se.constants import SW, sw_name
from hatchway.se.errors import ApduError, MalformedApdu


@pytest.mark.parametrize(
    ("hexstr", "expected"),
    [
        ("00a40400", CommandApdu(0, 0xA4, 4, 0)),  # case 1
        ("00c0000000", CommandApdu(0, 0xC0, 0, 0, le=256)),  # case 2S, Le=00 → 256
        ("80ca0066030201", None),  # Lc says 3, two bytes follow
        ("00a4040003a0000101", CommandApdu(0, 0xA4, 4, 0, b"\xa0\x00\x01", le=1)),  # case 4S
        ("80ca9f7f000000", CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=65536, extended=True)),  # 2E
        ("8042000000000161", CommandApdu(0x80, 0x42, 0, 0, b"a", extended=True)),  # 3E
        ("80420000000001610100", CommandApdu(0x80, 0x42, 0, 0, b"a", le=256, extended=True)),
        ("804200000000", None),  # truncated extended
        ("80420000000000", None),  # extended Lc of zero is not case 2E here: length 7 → 2E
        ("804200", None),
    ],
)
def test_parse_cases(hexstr: str, expected: CommandApdu | None) -> None:
    raw = bytes.fromhex(hexstr)
    if hexstr == "80420000000000":
        assert CommandApdu.parse(raw) == CommandApdu(0x80, 0x42, 0, 0, le=65536, extended=True)
        return
    if expected is None:
        with pytest.raises(MalformedApdu):
            CommandApdu.parse(raw)
    else:
        assert CommandApdu.parse(raw) == expected
        assert expected.encode() == raw


def test_extended_zero_lc_with_data_is_refused() -> None:
    with pytest.raises(MalformedApdu):
        CommandApdu.parse(bytes.fromhex("80420000000000aa"))


def test_constructor_validates_fields() -> None:
    with pytest.raises(ValueError):
        CommandApdu(0x100, 0, 0, 0)
    with pytest.raises(ValueError):
        CommandApdu(0, 0, 0, 0, le=0)
    with pytest.raises(ValueError):
        CommandApdu(0, 0, 0, 0, b"x" * 65536)


def test_status_word_names_print_in_errors() -> None:
    expected = "card refused the command: SECURITY_STATUS_NOT_SATISFIED (6982)"
    assert str(ApduError(0x6982)) == expected
    assert sw_name(0x6110) == "BYTES_REMAINING (6110)"
    assert sw_name(0x6C10) == "6C10"
    with pytest.raises(ApduError) as err:
        ResponseApdu(b"", 0x6A88).check()
    assert err.value.sw == SW.REFERENCE_DATA_NOT_FOUND
    with pytest.raises(MalformedApdu):
        ResponseApdu.parse(b"\x90")


commands = st.builds(
    CommandApdu,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=600),
    st.none() | st.integers(1, 65536),
    st.booleans(),
)


@given(commands)
def test_round_trip(cmd: CommandApdu) -> None:
    parsed = CommandApdu.parse(cmd.encode())
    assert (parsed.cla, parsed.ins, parsed.p1, parsed.p2, parsed.data, parsed.le) == (
        cmd.cla,
        cmd.ins,
        cmd.p1,
        cmd.p2,
        cmd.data,
        cmd.le,
    )
    assert parsed.encode() == cmd.encode()


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_malformed_apdu(raw: bytes) -> None:
    try:
        cmd = CommandApdu.parse(raw)
    except MalformedApdu:
        return
    assert cmd.encode() == raw


@given(commands, st.data())
def test_truncations_never_crash(cmd: CommandApdu, data: st.DataObject) -> None:
    raw = cmd.encode()
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(MalformedApdu):
        CommandApdu.parse(raw[:cut])


@given(st.binary(min_size=0, max_size=2000))
def test_chaining_reassembles(data: bytes) -> None:
    cmd = CommandApdu(0x80, 0x42, 1, 2, data, le=256)
    links = chain(cmd)
    assert all(len(link.data) <= 255 for link in links)
    assert all(link.cla & 0x10 for link in links[:-1]) and not links[-1].cla & 0x10
    assembler = ChainAssembler()
    results = [assembler.feed(CommandApdu.parse(link.encode())) for link in links]
    assert results[:-1] == [None] * (len(links) - 1)
    whole = results[-1]
    assert whole is not None and whole.data == data and whole.cla == 0x80


def test_broken_chain_is_refused() -> None:
    assembler = ChainAssembler()
    assert assembler.feed(CommandApdu(0x90, 0x42, 0, 0, b"a")) is None
    with pytest.raises(ApduError) as err:
        assembler.feed(CommandApdu(0x80, 0x44, 0, 0, b"b"))
    assert err.value.sw == SW.LAST_COMMAND_OF_CHAIN_EXPECTED
    assert not assembler.pending
    with pytest.raises(ValueError):
        chain(CommandApdu(0x90, 0x42, 0, 0))


def test_response_queue_and_transceive_collect_61xx() -> None:
    queue = ResponseQueue()
    payload = bytes(range(256)) * 3
    assert queue.next(256) == ResponseApdu(b"", SW.CONDITIONS_NOT_SATISFIED)

    def transmit(raw: bytes) -> bytes:
        cmd = CommandApdu.parse(raw)
        if cmd.ins == 0xC0:
            return queue.next(cmd.le or 256).encode()
        return queue.start(ResponseApdu(payload, 0x9000), 256).encode()

    got = transceive(transmit, CommandApdu(0x80, 0xCA, 0, 0, le=256))
    assert got == ResponseApdu(payload, 0x9000)
