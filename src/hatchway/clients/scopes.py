"""Scopes a client may get (RFC 6749 §3.3), and their plain-words descriptions.

* A request's ``scope`` is a space-separated list of scope tokens
  (``1*( %x21 / %x23-5B / %x5D-7E )``). :func:`parse_scope` refuses anything
  else, and caps the count and length before doing any work.
* :func:`grant_scope` gives a client only scopes registered for it: a request
  naming any other scope fails with ``invalid_scope`` (RFC 6749 §5.2) rather
  than being silently narrowed, so a client cannot mistake what it holds. A
  request naming no scope gets the client's registered scopes (its defaults).
* :data:`SCOPE_DESCRIPTIONS` is the small registry the approval page reads to
  say what the user is granting. A scope without an entry is shown by name,
  marked as having no description, never left out.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import TYPE_CHECKING

from hatchway.errors import RemoteProtocolError

if TYPE_CHECKING:
    from hatchway.clients.model import ClientRecord

__all__ = [
    "MAX_SCOPES",
    "MAX_SCOPE_TOKEN_LENGTH",
    "SCOPE_DESCRIPTIONS",
    "ScopeRefused",
    "check_scope_token",
    "describe_scope",
    "grant_scope",
    "parse_scope",
]

MAX_SCOPES = 32
MAX_SCOPE_TOKEN_LENGTH = 64
_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

SCOPE_DESCRIPTIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "openid": "Confirm which account you are",
        "profile": "See your account name",
        "email": "See your email address",
        "offline_access": "Stay signed in on the device until you sign it out",
        "telemetry:write": "Send readings in your name",
        "commands:read": "Receive commands sent to you",
        "admin": "Administer this service with your rights",
        "payments:write": "Make payments in your name",
    }
)


class ScopeRefused(RemoteProtocolError):
    """RFC 6749 §5.2 ``invalid_scope``: malformed, or not registered for the client."""

    error = "invalid_scope"


def check_scope_token(token: str) -> None:
    """Raise ``ValueError`` unless ``token`` is one RFC 6749 §3.3 scope token."""
    if (
        not isinstance(token, str)
        or not 0 < len(token) <= MAX_SCOPE_TOKEN_LENGTH
        or not _TOKEN.fullmatch(token)
    ):
        raise ValueError(
            f"not a scope token (RFC 6749 §3.3, at most {MAX_SCOPE_TOKEN_LENGTH}): {token!r}"
        )


def parse_scope(text: str) -> tuple[str, ...]:
    """Split a ``scope`` parameter into distinct tokens, in order; refuse bad ones."""
    if len(text) > MAX_SCOPES * (MAX_SCOPE_TOKEN_LENGTH + 1):
        raise ScopeRefused("scope too long")
    # Only the space separates (§3.3); a tab or newline is a malformed token.
    tokens = [t for t in text.split(" ") if t]
    if len(tokens) > MAX_SCOPES:
        raise ScopeRefused("too many scopes")
    for token in tokens:
        try:
            check_scope_token(token)
        except ValueError:
            raise ScopeRefused("malformed scope") from None
    return tuple(dict.fromkeys(tokens))


def grant_scope(client: ClientRecord, requested: str) -> str:
    """The scope string ``client`` gets for ``requested``, or :class:`ScopeRefused`."""
    tokens = parse_scope(requested)
    if not tokens:
        return client.default_scope
    allowed = frozenset(client.scopes)
    if any(token not in allowed for token in tokens):
        raise ScopeRefused("scope not registered for this client")
    return " ".join(tokens)


def describe_scope(token: str) -> str:
    """Plain words for one scope; a scope without an entry is named as such."""
    known = SCOPE_DESCRIPTIONS.get(token)
    return known if known is not None else f"Use “{token}” (no description registered)"
