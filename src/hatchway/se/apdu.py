"""ISO/IEC 7816-4 command and response APDUs, command chaining and GET RESPONSE.

Implements ISO/IEC 7816-4:2020 §5.1 (the four command cases, short and extended
Lc/Le), §5.3.3 (command chaining: CLA bit ``10``) and §5.3.4 (``61xx`` then GET
RESPONSE). Parsing is strict: a byte string either is exactly one of the cases or
it is refused with ``MalformedApdu`` — no guessing, no trailing bytes.

The card side uses ``ChainAssembler`` and ``ResponseQueue``; the host side uses
``chain`` and ``transceive``, which takes the one injected I/O callable
(STYLE.md §9) and hides chaining and ``61xx`` from the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .constants import CLA, INS, SW, SW1_BYTES_REMAINING
from .errors import ApduError, MalformedApdu

SHORT_MAX_DATA = 255
SHORT_MAX_NE = 256
EXTENDED_MAX_DATA = 65535
EXTENDED_MAX_NE = 65536
#: A chained command larger than this is refused rather than buffered.
MAX_CHAINED_DATA = 65535

Transmit = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command. ``le`` is Ne (``None``: absent; 256/65536: "as much as possible").

    ``extended`` records that the APDU travelled with extended length fields; it
    matters because SCP03 MACs the header exactly as sent (Amendment D §6.2.4).
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool = False

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} must be one byte")
        if len(self.data) > EXTENDED_MAX_DATA:
            raise ValueError("command data too long")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_NE:
            raise ValueError("Le out of range")

    @property
    def needs_extended(self) -> bool:
        return (
            self.extended
            or len(self.data) > SHORT_MAX_DATA
            or (self.le is not None and self.le > SHORT_MAX_NE)
        )

    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def lc_field(self, length: int | None = None) -> bytes:
        """Lc for ``length`` data bytes in this APDU's encoding; empty when no data."""
        n = len(self.data) if length is None else length
        if n == 0:
            return b""
        if self.needs_extended or n > SHORT_MAX_DATA:
            return b"\x00" + n.to_bytes(2, "big")
        return bytes([n])

    def encode(self) -> bytes:
        out = self.header() + self.lc_field() + self.data
        if self.le is not None:
            if self.needs_extended:
                le = (self.le % EXTENDED_MAX_NE).to_bytes(2, "big")
                out += le if self.data else b"\x00" + le
            else:
                out += bytes([self.le % SHORT_MAX_NE])
        return out

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Strictly decode one command APDU (ISO 7816-4 §5.1, cases 1-4 S/E)."""
        n = len(raw)
        if n < 4:
            raise MalformedApdu("command APDU shorter than its header")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        if n == 5:
            return cls(cla, ins, p1, p2, le=raw[4] or SHORT_MAX_NE)
        if raw[4] != 0:
            lc = raw[4]
            if n == 5 + lc:
                return cls(cla, ins, p1, p2, bytes(raw[5:]))
            if n == 6 + lc:
                return cls(cla, ins, p1, p2, bytes(raw[5:-1]), le=raw[-1] or SHORT_MAX_NE)
            raise MalformedApdu("short Lc does not match the APDU length")
        if n < 7:
            raise MalformedApdu("truncated extended length")
        field16 = int.from_bytes(raw[5:7], "big")
        if n == 7:
            return cls(cla, ins, p1, p2, le=field16 or EXTENDED_MAX_NE, extended=True)
        if field16 == 0:
            raise MalformedApdu("extended Lc of zero")
        if n == 7 + field16:
            return cls(cla, ins, p1, p2, bytes(raw[7:]), extended=True)
        if n == 9 + field16:
            le = int.from_bytes(raw[-2:], "big") or EXTENDED_MAX_NE
            return cls(cla, ins, p1, p2, bytes(raw[7:-2]), le=le, extended=True)
        raise MalformedApdu("extended Lc does not match the APDU length")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    data: bytes
    sw: int

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise MalformedApdu("response APDU shorter than its status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))

    def check(self) -> bytes:
        """The data of a 9000 response; any other status word raises ``ApduError``."""
        if self.sw != SW.OK:
            raise ApduError(self.sw, self.data)
        return self.data


def status(sw: int) -> ResponseApdu:
    return ResponseApdu(b"", sw)


# --- card side --------------------------------------------------------------------


@dataclass(slots=True)
class ChainAssembler:
    """Reassembles a chained command (ISO 7816-4 §5.3.3) on the card.

    ``feed`` returns the whole command once the last link arrives, ``None`` while
    more links are expected. A link whose CLA/INS/P1/P2 differ from the first is a
    broken chain: the partial command is dropped and ``6883`` raised to the caller.
    """

    _first: CommandApdu | None = None
    _parts: list[bytes] = field(default_factory=list)
    _size: int = 0

    @property
    def pending(self) -> bool:
        return self._first is not None

    def abort(self) -> None:
        self._first, self._parts, self._size = None, [], 0

    def feed(self, cmd: CommandApdu) -> CommandApdu | None:
        more = bool(cmd.cla & CLA.CHAINING)
        plain = replace(cmd, cla=cmd.cla & ~int(CLA.CHAINING) & 0xFF)
        if self._first is None:
            if not more:
                return plain
            self._first = plain
        elif plain.header() != self._first.header():
            self.abort()
            raise ApduError(SW.LAST_COMMAND_OF_CHAIN_EXPECTED)
        self._size += len(cmd.data)
        if self._size > MAX_CHAINED_DATA:
            self.abort()
            raise ApduError(SW.WRONG_LENGTH)
        self._parts.append(cmd.data)
        if more:
            return None
        data = b"".join(self._parts)
        whole = replace(plain, data=data, extended=plain.extended or len(data) > SHORT_MAX_DATA)
        self.abort()
        return whole


@dataclass(slots=True)
class ResponseQueue:
    """Holds response data that did not fit, served by GET RESPONSE (§5.3.4)."""

    _rest: bytes = b""
    _sw: int = SW.OK
    _active: bool = False

    def clear(self) -> None:
        self._rest, self._sw, self._active = b"", SW.OK, False

    def start(self, response: ResponseApdu, limit: int) -> ResponseApdu:
        """Send at most ``limit`` bytes now; queue the rest behind ``61xx``."""
        self.clear()
        if len(response.data) <= limit:
            return response
        self._rest, self._sw, self._active = response.data, response.sw, True
        return self.next(limit)

    def next(self, limit: int) -> ResponseApdu:
        if not self._active:
            return status(SW.CONDITIONS_NOT_SATISFIED)
        chunk, self._rest = self._rest[:limit], self._rest[limit:]
        if not self._rest:
            sw = self._sw
            self.clear()
            return ResponseApdu(chunk, sw)
        remaining = min(len(self._rest), SHORT_MAX_NE) % SHORT_MAX_NE
        return ResponseApdu(chunk, (SW1_BYTES_REMAINING << 8) | remaining)


# --- host side ----------------------------------------------------------------------


def chain(cmd: CommandApdu, max_chunk: int = SHORT_MAX_DATA) -> list[CommandApdu]:
    """Split a command into short links with CLA bit ``10`` on all but the last."""
    if cmd.cla & CLA.CHAINING:
        raise ValueError("command already has the chaining bit")
    if len(cmd.data) <= max_chunk and not (cmd.le is not None and cmd.le > SHORT_MAX_NE):
        return [replace(cmd, extended=False)]
    le = None if cmd.le is None else min(cmd.le, SHORT_MAX_NE)
    pieces = [cmd.data[i : i + max_chunk] for i in range(0, len(cmd.data), max_chunk)]
    links = [
        CommandApdu(cmd.cla | CLA.CHAINING, cmd.ins, cmd.p1, cmd.p2, piece)
        for piece in pieces[:-1]
    ]
    links.append(CommandApdu(cmd.cla, cmd.ins, cmd.p1, cmd.p2, pieces[-1], le=le))
    return links


def get_response(ne: int = SHORT_MAX_NE) -> CommandApdu:
    return CommandApdu(0x00, INS.GET_RESPONSE, 0, 0, le=ne)


#: More ``61xx`` rounds than this means a card that never stops talking.
MAX_GET_RESPONSE_ROUNDS = 300


def transceive(transmit: Transmit, cmd: CommandApdu, *, short_only: bool = False) -> ResponseApdu:
    """Send ``cmd`` over ``transmit``, chaining and collecting ``61xx`` as needed."""
    links = chain(cmd) if short_only else [cmd]
    response = ResponseApdu(b"", SW.OK)
    for link in links:
        response = ResponseApdu.parse(transmit(link.encode()))
        if link is not links[-1] and response.sw != SW.OK:
            return response
    data = response.data
    rounds = 0
    while response.sw >> 8 == SW1_BYTES_REMAINING:
        rounds += 1
        if rounds > MAX_GET_RESPONSE_ROUNDS:
            raise MalformedApdu("card keeps answering 61xx")
        response = ResponseApdu.parse(transmit(get_response((response.sw & 0xFF) or 256).encode()))
        data += response.data
    return ResponseApdu(data, response.sw)
