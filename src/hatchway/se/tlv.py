"""Strict BER-TLV as used in smart-card data objects.

Implements ISO/IEC 7816-4:2020 §6.3 (BER-TLV data objects) with the tag and length
rules of ITU-T X.690 §8.1.2-8.1.3, tightened to DER-style strictness because every
TLV this card reads is also MAC'ed or hashed: two encodings of one value must never
both be accepted. Refused, each with ``MalformedTlv``: indefinite length (``80``),
non-minimal lengths (``81 05``) and tags (``1F 05``), lengths of more than three
bytes, the ``00``/``FF`` inter-object padding of ISO 7816-4 §6.3, values that run
past the buffer, trailing bytes where one object was expected, and nesting deeper
than ``MAX_DEPTH``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import MalformedTlv

#: A tag longer than three bytes does not occur in ISO 7816 or GP data objects.
MAX_TAG_BYTES = 3
#: Three length bytes (16 MiB) is far beyond any APDU; more is an attack on memory.
MAX_LENGTH_BYTES = 3
#: Constructed objects nest a few levels in GP (BF21 > 7F21 > ...); 8 is generous.
MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object: ``tag`` as the integer of its tag bytes (``0x5F49``)."""

    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        """Bit 6 of the first tag byte marks a constructed object (X.690 §8.1.2.5)."""
        return bool(_tag_bytes(self.tag)[0] & 0x20)

    def encode(self) -> bytes:
        return encode(self.tag, self.value)

    def children(self, *, depth: int = 1) -> list[Tlv]:
        """The objects inside a constructed object, parsed strictly."""
        if not self.constructed:
            raise MalformedTlv(f"tag {self.tag:X} is primitive")
        return parse_all(self.value, depth=depth)


def _tag_bytes(tag: int) -> bytes:
    if tag <= 0:
        raise ValueError("tag must be positive")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    try:
        parsed, end = _read_tag(raw, 0)
    except MalformedTlv:
        end, parsed = -1, -1
    if end != len(raw) or parsed != tag:
        raise ValueError(f"{tag:#x} is not a valid BER tag")
    return raw


def encode_length(n: int) -> bytes:
    """Minimal definite length (X.690 §8.1.3.4-5)."""
    if n < 0:
        raise ValueError("negative length")
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_LENGTH_BYTES:
        raise ValueError("value too long for a smart-card TLV")
    return bytes([0x80 | len(raw)]) + raw


def encode(tag: int, value: bytes) -> bytes:
    """One TLV: tag bytes, minimal length, value."""
    return _tag_bytes(tag) + encode_length(len(value)) + value


def encode_many(items: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(encode(tag, value) for tag, value in items)


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise MalformedTlv("missing tag")
    first = data[pos]
    if first in (0x00, 0xFF):
        # ISO 7816-4 allows these as padding between objects; nothing here sends them.
        raise MalformedTlv("padding byte where a tag was expected")
    tag = first
    pos += 1
    if first & 0x1F != 0x1F:
        return tag, pos
    count = 1
    while True:
        if pos >= len(data):
            raise MalformedTlv("truncated tag")
        b = data[pos]
        if count == 1 and (b == 0x80 or b < 0x1F):
            # X.690 §8.1.2.4.2: no leading zero groups, no long form for numbers < 31.
            raise MalformedTlv("non-minimal tag")
        tag = (tag << 8) | b
        pos += 1
        count += 1
        if count > MAX_TAG_BYTES:
            raise MalformedTlv("tag too long")
        if not b & 0x80:
            return tag, pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise MalformedTlv("missing length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    if first == 0x80:
        raise MalformedTlv("indefinite length")
    count = first & 0x7F
    if count > MAX_LENGTH_BYTES:
        raise MalformedTlv("length field too long")
    if pos + count > len(data):
        raise MalformedTlv("truncated length")
    raw = data[pos : pos + count]
    n = int.from_bytes(raw, "big")
    if raw[0] == 0 or n < 0x80:
        raise MalformedTlv("non-minimal length")
    return n, pos + count


def parse_one(data: bytes, pos: int = 0) -> tuple[Tlv, int]:
    """Parse the object at ``pos``; return it and the offset just past it."""
    tag, pos = _read_tag(data, pos)
    length, pos = _read_length(data, pos)
    end = pos + length
    if end > len(data):
        raise MalformedTlv("value runs past the end of the data")
    return Tlv(tag, bytes(data[pos:end])), end


def iter_tlvs(data: bytes) -> Iterator[Tlv]:
    pos = 0
    while pos < len(data):
        item, pos = parse_one(data, pos)
        yield item


def parse_all(data: bytes, *, depth: int = 0) -> list[Tlv]:
    """A sequence of objects that must fill ``data`` exactly.

    Constructed objects are parsed recursively here as well, so a malformed inner
    object is refused up front instead of when some caller happens to look at it.
    """
    if depth > MAX_DEPTH:
        raise MalformedTlv("TLV nesting too deep")
    items = list(iter_tlvs(data))
    for item in items:
        if item.constructed:
            parse_all(item.value, depth=depth + 1)
    return items


def parse_exact(data: bytes) -> Tlv:
    """Exactly one object and nothing after it."""
    items = parse_all(data)
    if len(items) != 1:
        raise MalformedTlv("expected exactly one data object")
    return items[0]


def unpack(tag: int, data: bytes) -> bytes:
    """The value of the single object ``tag`` that is all of ``data``."""
    item = parse_exact(data)
    if item.tag != tag:
        raise MalformedTlv(f"expected tag {tag:X}, got {item.tag:X}")
    return item.value


def find(items: Iterable[Tlv], tag: int) -> Tlv:
    """The single object with ``tag``; a duplicate or a missing one is malformed."""
    found = [item for item in items if item.tag == tag]
    if len(found) != 1:
        raise MalformedTlv(f"expected one tag {tag:X}, found {len(found)}")
    return found[0]
