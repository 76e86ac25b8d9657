"""Cross-device login core (US 9,635,022 B2 claims 1–3 as RFC 8628 device grant).

The sans-I/O pieces the server routes, pages and CLI call:

* :mod:`~hatchway.login.states` — the session value and its one transition table;
* :mod:`~hatchway.login.codes` — device code, user code, session reference;
* :mod:`~hatchway.login.polling` — the token endpoint's decision (RFC 8628 §3.5);
* :mod:`~hatchway.login.scram` — SCRAM-SHA-256 bound to the session (RFC 5802/7677);
* :mod:`~hatchway.login.ratelimit` — user-code guessing and password back-off;
* ``static/scram.js`` — the phone page's WebCrypto client (:data:`STATIC_DIR`).
"""

from __future__ import annotations

from pathlib import Path

from hatchway.login.codes import (
    entropy_bits,
    hash_device_code,
    new_device_code,
    new_match_number,
    new_user_code,
    normalize_user_code,
    session_reference,
)
from hatchway.login.polling import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    GrantType,
    InvalidGrant,
    IssueTokens,
    PendingReason,
    PollResult,
    SlowDown,
    TokenDecision,
    TokenError,
    poll,
)
from hatchway.login.ratelimit import (
    Allowance,
    AttemptState,
    BucketState,
    KeyedLimiter,
    LockoutPolicy,
    TokenBucket,
)
from hatchway.login.scram import (
    ScramClient,
    ScramServerExchange,
    ScramVerifier,
    UnusablePassword,
    decoy_iterations,
    decoy_verifier,
    make_verifier,
)
from hatchway.login.states import (
    TRANSITIONS,
    LoginSession,
    SessionState,
    approve,
    deny,
    expire_if_due,
    new_session,
    transition,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Directory holding ``scram.js`` and ``saslprep-tables.js`` for the phone page."""

__all__ = [
    "STATIC_DIR",
    "TRANSITIONS",
    "AccessDenied",
    "Allowance",
    "AttemptState",
    "AuthorizationPending",
    "BucketState",
    "ExpiredToken",
    "GrantType",
    "InvalidGrant",
    "IssueTokens",
    "KeyedLimiter",
    "LockoutPolicy",
    "LoginSession",
    "PendingReason",
    "PollResult",
    "ScramClient",
    "ScramServerExchange",
    "ScramVerifier",
    "SessionState",
    "SlowDown",
    "TokenBucket",
    "TokenDecision",
    "TokenError",
    "UnusablePassword",
    "approve",
    "decoy_iterations",
    "decoy_verifier",
    "deny",
    "entropy_bits",
    "expire_if_due",
    "hash_device_code",
    "make_verifier",
    "new_device_code",
    "new_match_number",
    "new_session",
    "new_user_code",
    "normalize_user_code",
    "poll",
    "session_reference",
    "transition",
]
