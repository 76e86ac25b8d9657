"""Shared pieces of the cross-device login flow adapters (US 9,635,022 B2, RFC 8628).

Holds what both the device side (:mod:`hatchway.flows.login`) and the phone side
(:mod:`hatchway.flows.login_approval`) need: the refusal type every endpoint maps
to an OAuth-style error, the server-held secret that keys CSRF tokens, decoy
verifiers and SCRAM exchange tokens, the admin switch, and the bus channel name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from typing import Any, Protocol

from hatchway.errors import HatchwayError
from hatchway.login.ratelimit import AttemptState, LockoutPolicy
from hatchway.server.datadir import ServerIdentity

FLOW_FLAG = "login_flow_disabled"
"""Store flag: "1" turns the cross-device login off on every replica at once."""

LOCKOUT = LockoutPolicy()
"""Password back-off and lockout; the store applies the same default policy."""


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
    ) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status_hint = status
        self.reason = reason or error
        self.retry_after = retry_after
        self.interval = interval

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        if self.interval is not None:
            body["interval"] = self.interval
        return body


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
    """``alice`` → ``a•••e``: enough for the owner to recognise, little for a shoulder."""
    if len(username) <= 2:
        return username[:1] + "•••"
    return f"{username[0]}•••{username[-1]}"


class DecoyAttempts:
    """Password-attempt history for accounts that do not exist, kept in memory.

    Unknown names must back off and lock exactly like real ones, or the answer
    to the fourth wrong password would tell an attacker which names are real.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._states: OrderedDict[str, AttemptState] = OrderedDict()

    def get(self, name: str) -> AttemptState:
        return self._states.get(name.casefold(), AttemptState())

    def record_failure(self, name: str, now: float) -> AttemptState:
        key = name.casefold()
        state = LOCKOUT.record_failure(self._states.pop(key, AttemptState()), now)
        self._states[key] = state
        while len(self._states) > self.max_entries:
            self._states.popitem(last=False)
        return state
