"""Errors of the login-side repositories; each says what the stored state refuses.

Refresh token failures follow STYLE.md §5: the token endpoint answers every one
of them with the same ``invalid_grant``, so :class:`RefreshTokenReused` is a
:class:`RefreshTokenInvalid` and an adapter that catches the base class cannot
leak which check failed. The subclass exists for the audit log only.
"""

from __future__ import annotations

from hatchway.store.errors import StoreError


class UserExists(StoreError):
    """``add_user`` with a name that is taken (compared case-insensitively)."""

    status_hint = 409


class UnknownUser(StoreError):
    """No account with this name."""

    status_hint = 404


class UserCodeTaken(StoreError):
    """Another *active* login session already has this user code; draw a new one."""

    status_hint = 409


class LoginSessionExists(StoreError):
    """A login session with this device code hash was stored before."""

    status_hint = 409


class StaleSession(StoreError):
    """The login session changed (or vanished) since it was read.

    Raised by the compare-and-set in ``update_login_session``: another request,
    possibly on another replica, moved the session first. Re-read and decide again.
    """

    status_hint = 409


class RefreshTokenInvalid(StoreError):
    """Unknown, expired or revoked refresh token (RFC 6749 §5.2 ``invalid_grant``)."""

    status_hint = 400


class RefreshTokenReused(RefreshTokenInvalid):
    """An already-rotated token came back: the whole family has been revoked.

    RFC 6819 §5.2.2.3 / OAuth 2.1 §4.3.1: either the legitimate client or an
    attacker holds a stolen copy, and the server cannot tell which, so neither
    keeps the session.
    """


class RefreshFamilyExists(StoreError):
    """``create_refresh_token`` with a family id or token hash already in use."""

    status_hint = 409


class ClientExists(StoreError):
    """``add_client`` with a client id that is registered already."""

    status_hint = 409


class UnknownClient(StoreError):
    """No registered client with this id."""

    status_hint = 404
