"""Registered clients in the login flow (issue 8 §1): who may ask, and for what.

:func:`~hatchway.flows.clients.registry.authenticate_client` identifies (public
clients) or authenticates (confidential clients) the caller of the device
authorization and token endpoints, answering ``invalid_client`` per RFC 6749
§5.2; :func:`~hatchway.flows.clients.registry.ensure_default_clients` registers
``hatchway-cli`` the first time a store is used by the server.
"""

from __future__ import annotations

from hatchway.flows.clients.registry import (
    CLI_CLIENT,
    DEFAULTS_SEEDED_FLAG,
    ClientCache,
    authenticate_client,
    ensure_default_clients,
    parse_basic_authorization,
)

__all__ = [
    "CLI_CLIENT",
    "DEFAULTS_SEEDED_FLAG",
    "ClientCache",
    "authenticate_client",
    "ensure_default_clients",
    "parse_basic_authorization",
]
