"""Values the login-side repositories hand out (US 9,635,022 B2, RFC 8628).

Frozen, slotted dataclasses like :mod:`hatchway.store.records` (STYLE.md §3).
Login sessions themselves are the login core's own
:class:`hatchway.login.states.LoginSession`; the store converts to and from it
rather than keeping a second, drifting copy of that value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from hatchway.login.ratelimit import AttemptState
from hatchway.login.scram import ScramVerifier
from hatchway.store.records import JsonObject


class AuditEvent(StrEnum):
    """What the audit log records (the issue's "Controls and records")."""

    START = "start"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CONSUMED = "consumed"
    PASSWORD_FAILED = "password_failed"  # noqa: S105 - an event name, not a secret
    LOCKED = "locked"
    RATE_LIMITED = "rate_limited"
    FLOW_DISABLED = "flow_disabled"
    TOKEN_REFRESHED = "token_refreshed"  # noqa: S105 - an event name, not a secret
    SESSION_REVOKED = "session_revoked"
    ACCESS_TOKEN_REVOKED = "access_token_revoked"  # noqa: S105 - an event name
    WITHDRAWN = "withdrawn"
    """The user pressed Deny after Approve, before the device collected its tokens."""
    CODE_PICK_FAILED = "code_pick_failed"
    """Confirm-code: the QR page's user picked a code the device does not show."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """An account: its SCRAM verifier (never a password) and attempt history."""

    username: str
    """As first registered, case preserved."""
    verifier: JsonObject = field(repr=False)
    """``ScramVerifier.to_json()`` as an object: salt, iterations, StoredKey, ServerKey."""
    disabled: bool
    created_at: float
    updated_at: float
    failed_attempts: int
    blocked_until: float
    """Back-off or lockout deadline; 0 when neither (LockoutPolicy semantics)."""
    locked: bool
    last_failure_at: float | None
    unlocked_at: float | None = None
    """When an operator last cleared the password limits (``users unlock``, a new
    password). Failures recorded before it no longer count, on every replica.
    Not ``updated_at``: a successful sign-in bumps that, and must not unlock."""

    @property
    def scram_verifier(self) -> ScramVerifier:
        """The verifier, parsed, for ``ScramServerExchange``."""
        return ScramVerifier.from_json(json.dumps(self.verifier))

    @property
    def attempt_state(self) -> AttemptState:
        """The login core's value, for ``LockoutPolicy.check`` / ``is_locked``."""
        return AttemptState(
            failures=self.failed_attempts, blocked_until=self.blocked_until, locked=self.locked
        )


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """One refresh token (known by its SHA-256 only) and its family's details."""

    token_hash: bytes = field(repr=False)
    family_id: str
    username: str
    client_id: str
    device_name: str
    scope: str
    created_at: float
    expires_at: float
    used_at: float | None
    session_expires_at: float | None = None
    """The family's absolute end (revision 0004); no token of it outlives this."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``rotate_refresh_token`` did.

    ``sealed_successor`` is ``None`` for a fresh rotation: ``token`` is the new
    token the caller proposed. For a retry within the reuse interval it is the
    successor minted by the first request, sealed under a key only the presented
    token yields, and ``token`` is that successor's record.
    """

    token: RefreshRecord
    sealed_successor: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SessionFamilyRecord:
    """One signed-in device: a refresh token family, as ``sessions list`` shows it."""

    family_id: str
    username: str
    client_id: str
    device_name: str
    scope: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    expires_at: float | None = None
    """The absolute end of the sign-in (revision 0004); ``None`` means uncapped."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    audit_id: int
    at: float
    event: AuditEvent
    username: str | None
    ip: str | None
    user_agent: str | None
    session_ref: str | None
    detail: JsonObject | None
