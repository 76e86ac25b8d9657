"""Device codes, user codes and match numbers for the device grant (RFC 8628 §6.1).

RFC 8628 §6.1 asks for a ``device_code`` an attacker cannot guess, and a
``user_code`` short enough to type but with enough entropy to survive online
guessing under a rate limit. We pick:

* ``device_code``: 32 random bytes (256 bits), base64url. The server keeps only
  its SHA-256 (:func:`hash_device_code`), so a leaked table lets nobody poll.
* ``user_code``: 8 characters from the base-20 alphabet ``BCDFGHJKLMNPQRSTVWXZ``
  (§6.1: no vowels, so no words; no digits, so no 0/O or 1/I confusion), shown
  as ``XXXX-XXXX``. That is 8·log2(20) ≈ 34.6 bits; :func:`guess_probability` is
  what the rate-limit sizing in the docs is computed from.
* match number: two decimal digits for the optional number matching step.

Every draw uses rejection sampling, because ``byte % 20`` on its own would make
the first 16 letters 1/256 more likely than the rest.
"""

from __future__ import annotations

import base64
import hashlib
import math

from hatchway.errors import RemoteProtocolError
from hatchway.runtime import Random

__all__ = [
    "DEVICE_CODE_BYTES",
    "USER_CODE_ALPHABET",
    "USER_CODE_LENGTH",
    "entropy_bits",
    "guess_probability",
    "hash_device_code",
    "new_device_code",
    "new_match_number",
    "new_user_code",
    "normalize_user_code",
    "session_reference",
    "uniform_index",
]

DEVICE_CODE_BYTES = 32
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
_GROUP = 4

# Typed codes arrive from phones whose keyboards "improve" punctuation, so the
# common dash look-alikes and non-breaking space count as separators too. Anything
# else (digits, vowels, other letters) is rejected rather than guessed at.
_SEPARATORS = frozenset(" \t\u00a0-\u2010\u2011\u2012\u2013\u2014\u2212")
# Bounds the work done on hostile input before any parsing (STYLE.md §7).
_MAX_TYPED_LENGTH = 64
_ALPHABET_SET = frozenset(USER_CODE_ALPHABET)
_SESSION_REF_PREFIX = "hwl1."


def _unbiased_indices(random: Random, modulus: int, count: int) -> list[int]:
    """Draw ``count`` uniform integers in ``[0, modulus)`` from random bytes.

    A byte is kept only below the largest multiple of ``modulus`` that fits in
    256; the rest are thrown away so every residue is exactly equally likely.
    """
    if not 1 < modulus <= 256:
        raise ValueError("modulus must be in 2..256")
    limit = 256 - (256 % modulus)
    out: list[int] = []
    while len(out) < count:
        # Ask for a little more than needed; rejection rarely costs a second call.
        for byte in random(count - len(out) + 4):
            if byte < limit:
                out.append(byte % modulus)
                if len(out) == count:
                    break
    return out


def new_device_code(random: Random) -> str:
    """A fresh device code: 256 random bits, base64url without padding."""
    raw = random(DEVICE_CODE_BYTES)
    if len(raw) != DEVICE_CODE_BYTES:
        raise ValueError("random source returned the wrong number of bytes")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_device_code(device_code: str) -> bytes:
    """The SHA-256 of a device code: the only form the server stores or indexes.

    A plain hash (not a password hash) is enough: the input has 256 bits of
    entropy, so there is nothing for a dictionary to find.
    """
    # UTF-8 rather than ASCII: a hostile non-ASCII value must hash to "no such
    # session", not crash the token endpoint.
    return hashlib.sha256(device_code.encode("utf-8", "surrogatepass")).digest()


def session_reference(device_code_hash: bytes) -> str:
    """A public reference for one login session, derived from its device code hash.

    It is what the phone page sends as the SCRAM username (see ``scram.py``), so
    it must name exactly one session yet reveal nothing usable for polling:
    hashing the stored hash once more, under a label, is one-way.
    """
    if len(device_code_hash) != hashlib.sha256().digest_size:
        raise ValueError("expected a SHA-256 device code hash")
    digest = hashlib.sha256(b"hatchway login session reference\x00" + device_code_hash).digest()
    return _SESSION_REF_PREFIX + base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def _format_user_code(chars: str) -> str:
    return f"{chars[:_GROUP]}-{chars[_GROUP:]}"


def new_user_code(random: Random) -> str:
    """A fresh user code such as ``BDFG-HJKL``, uniform over 20**8 values."""
    indices = _unbiased_indices(random, len(USER_CODE_ALPHABET), USER_CODE_LENGTH)
    return _format_user_code("".join(USER_CODE_ALPHABET[i] for i in indices))


def normalize_user_code(text: str) -> str:
    """Turn what a person typed into the canonical ``XXXX-XXXX`` form.

    Accepts lower case, spaces and dashes anywhere; rejects every other
    character and every wrong length with ``RemoteProtocolError``.
    """
    if len(text) > _MAX_TYPED_LENGTH:
        raise RemoteProtocolError("malformed user code")
    chars: list[str] = []
    for c in text:
        if c in _SEPARATORS:
            continue
        # isascii() first: str.upper() maps e.g. "ß" to "SS", which must never
        # turn a non-ASCII character into two valid code letters.
        upper = c.upper() if c.isascii() else c
        if upper not in _ALPHABET_SET:
            raise RemoteProtocolError("malformed user code")
        chars.append(upper)
    if len(chars) != USER_CODE_LENGTH:
        raise RemoteProtocolError("malformed user code")
    return _format_user_code("".join(chars))


def uniform_index(random: Random, modulus: int) -> int:
    """One uniform integer in ``[0, modulus)`` (e.g. where to place a real code)."""
    return _unbiased_indices(random, modulus, 1)[0]


def new_match_number(random: Random) -> str:
    """A two-digit number ("00"–"99") for number matching, uniformly drawn."""
    first, second = _unbiased_indices(random, 10, 2)
    return f"{first}{second}"


def entropy_bits(
    alphabet_size: int = len(USER_CODE_ALPHABET), length: int = USER_CODE_LENGTH
) -> float:
    """Bits of entropy in a uniformly drawn code: ``length · log2(alphabet_size)``."""
    return length * math.log2(alphabet_size)


def guess_probability(guesses: int, live_codes: int) -> float:
    """Chance that ``guesses`` distinct random user-code guesses hit any live code.

    With ``live_codes`` sessions pending at once, each guess succeeds with
    probability ``live_codes / 20**8``; this is the figure the per-IP rate limit
    (spent before every user-code lookup) is sized against. There is no global
    limit: an attacker with many addresses gets each address's budget.
    """
    if guesses < 0 or live_codes < 0:
        raise ValueError("guesses and live_codes must be non-negative")
    space = len(USER_CODE_ALPHABET) ** USER_CODE_LENGTH
    p_miss = 1.0 - min(live_codes, space) / space
    return 1.0 - float(p_miss**guesses)
