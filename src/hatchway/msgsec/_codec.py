"""Strict base64url and JSON codecs for JOSE compact serialization.

RFC 7515 §2 and §7.1 define BASE64URL as unpadded base64url (RFC 4648 §5) and the
JOSE Header as a UTF-8 JSON object (RFC 7159). RFC 7515 §5.2 step 4 and RFC 8725
§3.2 ask a receiver to reject headers with duplicate member names; RFC 7515
Appendix C and RFC 4648 §3.5 allow rejecting non-canonical encodings. We do all
of that here, because two parsers that disagree on what a token *says* are how
signature-wrapping attacks start.

JSON is read by ``hatchway.strictjson`` (which also refuses lone UTF-16
surrogates, as RFC 7493 §2.1 asks) and written through ``orjson`` when its result
is provably what the standard library would write (see ``dumps``).

Every failure raises ``CodecError``; the caller turns it into the opaque
``InvalidMessage`` so no parser detail reaches the peer.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import orjson

from hatchway import strictjson

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


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object: the project's strict reader
    (``hatchway.strictjson``: duplicate names, lone surrogates, NaN and deep
    nesting refused), so a header means the same here as to every other reader."""
    try:
        return strictjson.loads_object(data, max_depth=MAX_DEPTH)
    except strictjson.JsonError as exc:
        raise CodecError(str(exc)) from None


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
