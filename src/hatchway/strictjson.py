"""The one strict JSON reader for everything a peer sends (RFC 8259 under RFC 7493 I-JSON).

Every reader of peer JSON in hatchway (the JOSE codec, the server's request bodies, the
device SDK's view of server answers, the SE bridge) parses through :func:`loads`, so
they all accept exactly the same texts. What is refused, and why:

* text that is not UTF-8, and strings holding a lone UTF-16 surrogate, whether
  raw or spelled ``"\\ud800"`` (RFC 7493 §2.1): Python's ``json`` accepts the
  escape, and the resulting ``str`` cannot be encoded again, so it fails much
  later (in sqlite3, in ``hashlib``) as a 500 instead of here as a 400;
* ``NaN``, ``Infinity`` and numbers that overflow a double (RFC 7493 §2.2,
  RFC 8259 §6);
* duplicate member names (RFC 7493 §2.3): two parsers that pick different
  duplicates read different meanings from the same bytes;
* nesting deeper than ``max_depth``: no hatchway document nests deeper than 5,
  so more is only a way to spend the parser's stack.

``orjson`` does the first two and is fast. It keeps the last of duplicate names and
reads integers beyond 64 bits as doubles, so a text that is not byte for byte
orjson's own encoding of what it read is parsed a second time by the standard
library, with duplicates refused, and that exact reading is the result.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "JsonError", "loads", "loads_object"]

MAX_DEPTH = 16


class JsonError(ValueError):
    """The text is not strict JSON. The message is for logs, not for the peer."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise JsonError("duplicate member name")
    return obj


def _constant(name: str) -> Any:  # pragma: no cover - orjson refused it first
    raise JsonError(f"non-standard constant {name}")


_DUPLICATE_CHECK = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_constant)


def _too_deep(value: dict[str, Any] | list[Any], limit: int) -> bool:
    # Iterative, so measuring a deep value cannot itself exhaust the stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def loads(data: bytes | bytearray | memoryview | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one strict JSON text; raise :class:`JsonError` for anything else."""
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    try:
        value = orjson.loads(data)  # orjson stops at its own depth limit (1024)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        raise JsonError(f"malformed JSON: {exc}") from None
    if isinstance(value, dict | list) and _too_deep(value, max_depth):
        raise JsonError("JSON nested too deeply")
    if orjson.dumps(value) != (data.encode() if isinstance(data, str) else data):
        text = data if isinstance(data, str) else data.decode("utf-8")
        try:
            # Same strings (orjson proved them valid), exact integers, duplicates refused.
            value = _DUPLICATE_CHECK.decode(text)
        except JsonError:
            raise
        except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits
            raise JsonError(f"malformed JSON: {exc}") from None
    return value


def loads_object(
    data: bytes | bytearray | memoryview | str, *, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """:func:`loads`, and the text must be a JSON object."""
    value = loads(data, max_depth=max_depth)
    if type(value) is not dict:
        raise JsonError("JSON text is not an object")
    return value
