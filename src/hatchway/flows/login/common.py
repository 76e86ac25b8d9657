"""Shared pieces of the cross-device login flow adapters (US 9,635,022 B2, RFC 8628).

Holds what both the device side (:mod:`hatchway.flows.login`) and the phone side
(:mod:`hatchway.flows.login.approval`) need: the refusal type every endpoint maps
to an OAuth-style error, the server-held secret that keys CSRF tokens, decoy
verifiers and SCRAM exchange tokens, the admin switch, and the bus channel name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from hatchway.errors import HatchwayError
from hatchway.limits import LimitsUnavailable
from hatchway.login.states import SessionState
from hatchway.server.datadir import ServerIdentity
from hatchway.store.schema import MAX_ID_LENGTH
from hatchway.store.users import username_key

FLOW_FLAG = "login_flow_disabled"
"""Store flag: "1" turns the cross-device login off on every replica at once."""

SCRAM_ITERATIONS_FLAG = "login_scram_iterations"
"""Store flag: the PBKDF2 count ``hatchway users add`` last used. Decoy verifiers
use it, so an unknown name's server-first carries the same ``i=`` as a real one's."""

DEVICE_NAME_MAX = 40
MAX_FIELD = MAX_ID_LENGTH
"""Longest form value (client_id, device_code, refresh_token …): the one limit the
schema's columns and the store's ``check_id`` use too, so a value the form accepts
is always one the store keeps (a 256-character client_id once passed the form,
failed the store, and burned the approval)."""


class LoginRefused(HatchwayError):
    """A login request refused with an RFC 6749 §5.2 / RFC 8628 §3.5 style error.

    ``error`` and ``description`` go to the peer; ``reason`` only to the server log.
    """

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        status: int = 400,
        reason: str = "",
        retry_after: int | None = None,
        interval: int | None = None,
        challenge: str | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status_hint = status
        self.reason = reason or error
        self.retry_after = retry_after
        self.interval = interval
        #: ``WWW-Authenticate`` for a 401 (RFC 6749 §5.2: the scheme the client used).
        self.challenge = challenge

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        if self.interval is not None:
            body["interval"] = self.interval
        return body


@contextmanager
def limits_or_503() -> Iterator[None]:
    """Shared limits that cannot be asked refuse the request: fail closed, never open."""
    try:
        yield
    except LimitsUnavailable as exc:
        logging.getLogger("hatchway.login").error("shared limits unavailable: %s", exc)
        raise LoginRefused(
            "temporarily_unavailable", "try again shortly", status=503, retry_after=5
        ) from None


class Notifier(Protocol):
    """What the flow needs from the bus: publish from a worker thread."""

    def publish(self, channel: str, payload: str) -> None: ...


def login_channel(session_ref: str) -> str:
    """Bus channel on which a session's decision is announced.

    The public session reference (never the device code) names it; a short hash
    keeps it a valid PostgreSQL identifier for LISTEN/NOTIFY.
    """
    digest = hashlib.sha256(session_ref.encode()).hexdigest()[:32]
    return f"hw_login_{digest}"


def server_secret(identity: ServerIdentity, label: str) -> bytes:
    """A key derived from the server's signing key, so every replica derives the same."""
    private = identity.signing_key.to_jwk(private=True)
    material = json.dumps(private, sort_keys=True).encode()
    return hmac.new(material, b"hatchway login\x00" + label.encode(), hashlib.sha256).digest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mask_username(username: str) -> str:
    """``alice`` → ``a•••e``: enough for the owner to recognise, little for a shoulder.

    Only visible characters are shown: a ``login_hint`` that begins with U+202E
    (right-to-left override) or any other control or format character must not
    put it on the page, where it would reorder the text after it.
    """
    visible = "".join(
        ch for ch in username if unicodedata.category(ch) not in _DROPPED | {"Zl", "Zp"}
    )
    if len(visible) <= 2:
        return visible[:1] + "•••"
    return f"{visible[0]}•••{visible[-1]}"


def account_key(username: str) -> str:
    """The account identity a name maps to: the store's ``username_key``.

    Decoy verifiers and attempt counters use it for *every* name, so a
    full-width or differently cased spelling of an unknown name behaves exactly
    as a spelling of a real one does (the same account, the same salt). Names
    the store could never hold get a best-effort key of the same shape.
    """
    try:
        return username_key(username)
    except ValueError:
        return unicodedata.normalize("NFKC", username).casefold()


_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Cc control, Cf format (bidi, zero-width), Cs/Co/Cn surrogate, private, unassigned.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


_QUOTES = frozenset(
    "\"'`"  # ASCII
    "\u201c\u201d\u201e\u201f\u2018\u2019\u201a\u201b"  # curly and low quotes
    "\u00ab\u00bb\u2039\u203a"  # guillemets
    "\u300c\u300d\u300e\u300f\uff02\uff07"  # CJK corner brackets, full-width quotes
)


# Words in the Unicode names of characters that read as quotation marks: ❝ ❞
# (ornaments), ″ ‶ (primes), 〝 〞 〟 (CJK double-prime quotes), ＂ ＇ ʼ, ״ …
_QUOTE_WORDS = (
    "QUOTATION",
    "PRIME",
    "APOSTROPHE",
    "GERESH",
    "GERSHAYIM",
    "DOUBLE ACUTE",
    "TURNED COMMA",
    "REVERSED COMMA",
    "CORNER BRACKET",
)


def has_bidi_controls(text: str) -> bool:
    """True if ``text`` holds an explicit bidi embedding, override, isolate or mark."""
    return any(ch in _BIDI_CONTROLS for ch in text)


def _reads_as_quote(ch: str) -> bool:
    if unicodedata.category(ch) in ("Pi", "Pf") or ch in _QUOTES:
        return True
    name = unicodedata.name(ch, "")
    return any(word in name for word in _QUOTE_WORDS)


def sanitize_device_name(name: str) -> str:
    """What the approval page may show of a device's self-chosen name.

    NFKC-normalises it (full-width and other compatibility look-alikes become
    plain letters), drops control and format characters (Unicode Cc and Cf:
    zero-width characters, and bidi controls, which the device authorization
    endpoint refuses outright, see :func:`has_bidi_controls`) and everything
    that reads as a quotation mark, turns every kind of space or line break into
    one space, and caps the length at :data:`DEVICE_NAME_MAX`. Letters of
    right-to-left scripts stay (a Hebrew or Arabic name is legitimate); the page
    isolates the name in ``<bdi>`` so they cannot reorder the sentence around
    it. The page still labels it as the name the device gave, not as a fact.
    """
    chars: list[str] = []
    for ch in unicodedata.normalize("NFKC", name):
        category = unicodedata.category(ch)
        if ch.isspace() or category in ("Zs", "Zl", "Zp"):
            chars.append(" ")
        elif _reads_as_quote(ch):
            # No quotation marks: the page quotes the name, and a name that closed
            # that quote could append its own "verified" wording after it.
            continue
        elif ch not in _BIDI_CONTROLS and category not in _DROPPED:
            chars.append(ch)
    text = " ".join("".join(chars).split())
    if len(text) > DEVICE_NAME_MAX:
        text = text[: DEVICE_NAME_MAX - 1].rstrip() + "…"
    return text


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the push endpoint tells a waiting device about its session."""

    reference: str
    state: SessionState
    match_number_required: bool
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "match_number_required": self.match_number_required
            and self.state is SessionState.APPROVED,
        }


def form_field(
    form: dict[str, str],
    name: str,
    *,
    required: bool = True,
    default: str = "",
    max_length: int = MAX_FIELD,
) -> str:
    value = form.get(name, default)
    if not isinstance(value, str) or len(value) > max_length or (required and not value):
        raise LoginRefused("invalid_request", f"missing or malformed {name}")
    return value
