"""Strict base64url and JSON codecs for JOSE compact serialization.

RFC 7515 §2 and §7.1 define BASE64URL as unpadded base64url (RFC 4648 §5) and the
JOSE Header as a UTF-8 JSON object (RFC 7159). RFC 7515 §5.2 step 4 and RFC 8725
§3.2 ask a receiver to reject headers with duplicate member names; RFC 7515
Appendix C and RFC 4648 §3.5 allow rejecting non-canonical encodings. We do all
of that here, because two parsers that disagree on what a token *says* are how
signature-wrapping attacks start.

JSON goes through ``orjson`` when its result is provably the same as the strict
standard-library path below, and through that path otherwise (see ``dumps`` and
``loads_object``): the fast path changes speed, never what is accepted.

Every failure raises ``CodecError``; the caller turns it into the opaque
``InvalidMessage`` so no parser detail reaches the peer.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import orjson

__all__ = ["CodecError", "b64d", "b64e", "dumps", "loads_object"]

# Deep nesting costs stack, never meaning: no hatchway header or claim set nests
# deeper than 4, so anything past this is an attack on the parser.
MAX_DEPTH = 16

_TO_STD = bytes.maketrans(b"-_", b"+/")
_FROM_STD = bytes.maketrans(b"+/", b"-_")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_LAST_OF_2 = frozenset(_ALPHABET[i] for i in range(0, 64, 16))  # 4 unused bits
_LAST_OF_3 = frozenset(_ALPHABET[i] for i in range(0, 64, 4))  # 2 unused bits
_PAD = (b"", b"", b"==", b"=")


class CodecError(ValueError):
    """Malformed base64url or JSON. Internal; never shown to a peer."""


def b64e(data: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 §2)."""
    return binascii.b2a_base64(data, newline=False).translate(_FROM_STD).rstrip(b"=")


def b64d(text: bytes) -> bytes:
    """Decode unpadded base64url, accepting only the canonical encoding.

    Padding, whitespace, characters outside the url-safe alphabet and non-zero
    trailing bits are all rejected: a token has exactly one valid spelling.
    """
    rem = len(text) % 4
    if rem == 1 or text.translate(None, _ALPHABET):
        raise CodecError("base64url length or alphabet")
    # RFC 4648 §3.5: the unused low bits of the last character must be zero,
    # otherwise several spellings would decode to the same bytes.
    if (rem == 2 and text[-1] not in _LAST_OF_2) or (rem == 3 and text[-1] not in _LAST_OF_3):
        raise CodecError("non-canonical base64url")
    return binascii.a2b_base64(text.translate(_TO_STD) + _PAD[rem])


def _reject_constant(name: str) -> Any:
    raise CodecError(f"non-standard JSON constant {name}")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise CodecError("duplicate JSON member")
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_pairs,
    parse_constant=_reject_constant,
)


def _depth_ok(text: str) -> bool:
    # Counting brackets outside strings is cheap and bounds recursion before
    # the C decoder (which recurses per level) ever sees the input.
    depth = 0
    in_str = False
    escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object, with duplicate keys rejected."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = None
        # Byte for byte orjson's own encoding of the value: so no duplicate
        # member, no escape or number spelling that parsers read differently,
        # no NaN, nothing after the object. The peer is usually hatchway.
        if type(value) is dict and orjson.dumps(value) == data:
            return value
    return _strict_loads(data)


def _strict_loads(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise CodecError("not UTF-8") from exc
    if not text.startswith("{"):
        raise CodecError("JSON is not an object")
    if text.count("[") + text.count("{") > MAX_DEPTH and not _depth_ok(text):
        raise CodecError("JSON nested too deeply")
    try:
        value, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError) as exc:
        raise CodecError("malformed JSON") from exc
    if text[end:].strip(" \t\r\n") or not isinstance(value, dict):
        raise CodecError("trailing data after JSON object")
    return value


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: dict[str, Any]) -> bytes:
    """Compact JSON, UTF-8, no NaN: what we sign is exactly what we mean."""
    try:
        out = orjson.dumps(value)
    except orjson.JSONEncodeError:
        out = b""
    # orjson writes NaN as null and serialises types the standard library
    # refuses (dataclasses, UUIDs...): keep its bytes only if they read back as
    # the very same value, else let the standard encoder accept or raise.
    if out and orjson.loads(out) == value:
        return out
    return _ENCODER.encode(value).encode()
