"""SCP03 secure messaging state rules (Amendment D §6.2): closure, ordering, padding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.errors import InvalidMessage, LocalProtocolError
from hatchway.se.apdu import CommandApdu, ResponseApdu
from hatchway.se.errors import ChannelClosed
from hatchway.se.kdf import SessionKeys
from hatchway.se.securemsg import (
    MAX_IN_FLIGHT,
    CardSecureChannel,
    ChannelState,
    SecureChannel,
    pad,
    unpad,
)

KEYS = SessionKeys(b"\x01" * 16, b"\x02" * 16, b"\x03" * 16)


def pair() -> tuple[SecureChannel, CardSecureChannel]:
    return SecureChannel(KEYS, b"\x07" * 16), CardSecureChannel(
        KEYS, b"\x07" * 16, oce_authenticated=True
    )


@given(st.binary(max_size=600), st.binary(max_size=600), st.integers(1, 5))
def test_round_trip_any_size(data: bytes, answer: bytes, rounds: int) -> None:
    host, card = pair()
    for _ in range(rounds):
        cmd = CommandApdu(0x80, 0x42, 0, 0, data, le=256)
        inner = card.unwrap_command(CommandApdu.parse(host.wrap_command(cmd).encode()))
        assert inner.data == data and inner.cla == 0x80
        assert host.unwrap_response(card.wrap_response(ResponseApdu(answer, 0x9000))) == (
            ResponseApdu(answer, 0x9000)
        )


def test_flipping_any_bit_of_a_command_closes_the_card_channel_for_good() -> None:
    host, card = pair()
    raw = bytearray(host.wrap(bytes.fromhex("8042000003616263")))
    raw[-3] ^= 0x01
    with pytest.raises(InvalidMessage) as err:
        card.unwrap_command(CommandApdu.parse(bytes(raw)))
    assert str(err.value) == "invalid message"  # opaque: no hint which check failed
    assert card.state is ChannelState.CLOSED
    with pytest.raises(ChannelClosed):
        card.unwrap_command(CommandApdu(0x84, 0x42, 0, 0, bytes(8)))


def test_tampered_response_closes_the_host_channel() -> None:
    host, card = pair()
    card.unwrap_command(CommandApdu.parse(host.wrap(bytes.fromhex("80440000"))))
    protected = bytearray(card.wrap_response(ResponseApdu(b"secret", 0x9000)).encode())
    protected[0] ^= 0x80
    with pytest.raises(InvalidMessage):
        host.unwrap(bytes(protected))
    assert host.closed
    with pytest.raises(ChannelClosed):
        host.wrap(bytes.fromhex("80440000"))


def test_response_status_word_is_authenticated() -> None:
    host, card = pair()
    card.unwrap_command(CommandApdu.parse(host.wrap(bytes.fromhex("80440000"))))
    protected = card.wrap_response(ResponseApdu(b"x", 0x9000))
    with pytest.raises(InvalidMessage):
        host.unwrap_response(ResponseApdu(protected.data, 0x6310))


def test_error_status_words_travel_bare_and_data_on_them_is_refused() -> None:
    host, card = pair()
    card.unwrap_command(CommandApdu.parse(host.wrap(bytes.fromhex("80440000"))))
    assert card.wrap_response(ResponseApdu(b"leak", 0x6A88)) == ResponseApdu(b"", 0x6A88)
    assert host.unwrap(bytes.fromhex("6a88")) == bytes.fromhex("6a88")
    host.wrap(bytes.fromhex("80440000"))
    with pytest.raises(InvalidMessage):
        host.unwrap(bytes.fromhex("aabb6a88"))


def test_out_of_order_use_is_a_local_error() -> None:
    host, card = pair()
    with pytest.raises(LocalProtocolError):
        host.unwrap(bytes.fromhex("9000"))  # no command in flight
    card.unwrap_command(CommandApdu.parse(host.wrap(bytes.fromhex("80440000"))))
    with pytest.raises(LocalProtocolError):  # the card serves one command at a time
        card.unwrap_command(CommandApdu(0x84, 0x44, 0, 0, bytes(8)))
    host, card = pair()
    with pytest.raises(LocalProtocolError):
        card.wrap_response(ResponseApdu(b"", 0x9000))
    with pytest.raises(LocalProtocolError):
        SecureChannel(KEYS).wrap_command(CommandApdu(0x84, 0x44, 0, 0))


def test_pipelined_commands_are_answered_in_order() -> None:
    """Several commands wrapped before any answer (one relay batch): each response is
    checked against its own command's MAC chaining value and counter."""
    host, card = pair()
    wrapped = [host.wrap(CommandApdu(0x80, 0x42, 0, 0, bytes([i]) * 20).encode()) for i in range(3)]
    assert host.in_flight == 3 and host.state is ChannelState.BUSY
    answers = []
    for i, raw in enumerate(wrapped):
        assert card.unwrap_command(CommandApdu.parse(raw)).data == bytes([i]) * 20
        answers.append(card.wrap_response(ResponseApdu(b"r%d" % i, 0x9000)).encode())
    assert [host.unwrap(a) for a in answers] == [b"r0\x90\x00", b"r1\x90\x00", b"r2\x90\x00"]
    assert host.in_flight == 0 and host.state is ChannelState.OPEN
    with pytest.raises(LocalProtocolError):
        host.unwrap(answers[0])


def test_swapped_pipelined_responses_fail_and_close() -> None:
    """A relay that reorders the answers of a batch is caught by the first R-MAC."""
    host, card = pair()
    wrapped = [host.wrap(bytes.fromhex("80440000")), host.wrap(bytes.fromhex("80460000"))]
    answers = []
    for raw, data in zip(wrapped, (b"secret", b"\x00\x00\x00\x01"), strict=True):
        card.unwrap_command(CommandApdu.parse(raw))
        answers.append(card.wrap_response(ResponseApdu(data, 0x9000)).encode())
    with pytest.raises(InvalidMessage):
        host.unwrap(answers[1])
    assert host.closed and host.in_flight == 0
    with pytest.raises(ChannelClosed):
        host.unwrap(answers[0])


def test_commands_in_flight_are_bounded() -> None:
    host, _ = pair()
    for _ in range(MAX_IN_FLIGHT):
        host.wrap(bytes.fromhex("80460000"))
    with pytest.raises(LocalProtocolError):
        host.wrap(bytes.fromhex("80460000"))


def test_replayed_command_fails_the_mac_chain() -> None:
    host, card = pair()
    first = host.wrap(bytes.fromhex("8042000003616263"))
    card.unwrap_command(CommandApdu.parse(first))
    card.wrap_response(ResponseApdu(b"", 0x9000))
    with pytest.raises(InvalidMessage):
        card.unwrap_command(CommandApdu.parse(first))


def test_command_without_mac_or_whole_blocks_is_refused() -> None:
    _, card = pair()
    with pytest.raises(InvalidMessage):
        card.unwrap_command(CommandApdu(0x80, 0x44, 0, 0, b"12345678"))


def test_iso9797_method2_padding() -> None:
    assert pad(b"") == b"\x80" + bytes(15)
    assert pad(b"a" * 16) == b"a" * 16 + b"\x80" + bytes(15)
    assert unpad(pad(b"abc\x80\x00")) == b"abc\x80\x00"
    for bad in (bytes(16), b"a" * 16, b"\x80" + bytes(16)):
        with pytest.raises(ValueError):
            unpad(bad)
