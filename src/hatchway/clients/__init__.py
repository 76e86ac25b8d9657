"""Registered OAuth clients (issue 8 §1): the sans-I/O model.

* :mod:`~hatchway.clients.model` — the client record, its type and token
  endpoint authentication method (RFC 7591 §2 names), the anti-phishing modes,
  and client secrets (stored only as a hash, compared in constant time);
* :mod:`~hatchway.clients.scopes` — which scopes a request gets (RFC 6749 §3.3)
  and how the approval page names them in plain words.

The store keeps the records (:mod:`hatchway.store.clients`); the login flow
consults them (:mod:`hatchway.flows.clients`).
"""

from __future__ import annotations

from hatchway.clients.model import (
    CLI_CLIENT_ID,
    MAX_CLIENT_NAME_LENGTH,
    AntiPhishing,
    AuthMethod,
    ClientRecord,
    ClientType,
    check_client_id,
    hash_client_secret,
    new_client,
    new_client_secret,
)
from hatchway.clients.scopes import (
    SCOPE_DESCRIPTIONS,
    ScopeRefused,
    check_scope_token,
    describe_scope,
    grant_scope,
    parse_scope,
)

__all__ = [
    "CLI_CLIENT_ID",
    "MAX_CLIENT_NAME_LENGTH",
    "SCOPE_DESCRIPTIONS",
    "AntiPhishing",
    "AuthMethod",
    "ClientRecord",
    "ClientType",
    "ScopeRefused",
    "check_client_id",
    "check_scope_token",
    "describe_scope",
    "grant_scope",
    "hash_client_secret",
    "new_client",
    "new_client_secret",
    "parse_scope",
]
