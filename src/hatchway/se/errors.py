"""Errors of the secure-element layer, on top of ``hatchway.errors``.

Parsers raise only ``MalformedApdu`` / ``MalformedTlv`` (the peer sent bytes that
are not ISO 7816-4), a card's refusal surfaces as ``ApduError`` whose message names
the status word, and every failed MAC, receipt or padding check is the one opaque
``hatchway.errors.InvalidMessage`` (STYLE.md §4, §5).
"""

from __future__ import annotations

from hatchway.errors import LocalProtocolError, RemoteProtocolError

from .constants import sw_name


class MalformedApdu(RemoteProtocolError):
    """Bytes that are not a well-formed command or response APDU (ISO 7816-4 §5.1)."""


class MalformedTlv(RemoteProtocolError):
    """Bytes that are not strict BER-TLV (ISO 7816-4 §6.3, X.690 §8.1)."""


class ApduError(RemoteProtocolError):
    """The card answered with a status word that is not success."""

    def __init__(self, sw: int, data: bytes = b"") -> None:
        super().__init__(f"card refused the command: {sw_name(sw)}")
        self.sw = sw
        self.data = data


class ChannelClosed(LocalProtocolError):
    """The secure channel failed a check before and may never be used again."""

    def __init__(self) -> None:
        super().__init__("secure channel is closed")
