"""RFC 7009 token revocation: ``POST /oauth/revoke``.

* A **refresh token** is revoked with its whole family (RFC 7009 §2.1: the
  server "SHOULD also invalidate all access tokens based on the same
  authorization grant"): the device is signed out, the family's access tokens
  fail at ``/api/whoami`` and introspection (they carry the family as ``sid``).
* An **access token** is revoked by remembering its ``jti`` until its ``exp``
  (:mod:`hatchway.store.revocations`); introspection and whoami then refuse it.
  A resource server that checks the JWT *offline* cannot learn of this before
  ``exp`` — docs/login.md says which checks need introspection.

A client may revoke only its own tokens. A token that is unknown, malformed,
expired or another client's is answered exactly like a revoked one (200, nothing
revoked; RFC 7009 §2.2), so the endpoint tells no one whether a token exists.
``token_type_hint`` only decides which kind is looked up first (§2.1).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from hatchway.errors import InvalidMessage
from hatchway.flows.login.tokens import refresh_token_hash
from hatchway.flows.oauth.client_auth import AuthenticatedClient
from hatchway.store.login_records import AuditEvent

if TYPE_CHECKING:  # flows/login/service.py imports this package
    from hatchway.flows.login.service import LoginService

log = logging.getLogger("hatchway.oauth")

REVOCATION_PATH = "/oauth/revoke"
ACCESS_HINT = "access_token"
REFRESH_HINT = "refresh_token"
MAX_TOKEN = 8192


def same_client(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class TokenRevocation:
    """Revocation over the login service's store, keys and clock."""

    def __init__(self, login: LoginService) -> None:
        self.login = login

    def revoke(
        self, client: AuthenticatedClient, token: str, hint: str | None, *, ip: str, user_agent: str
    ) -> None:
        """Revoke ``token`` if it is ``client``'s; otherwise do nothing, silently."""
        if not token or len(token) > MAX_TOKEN:
            return
        order = (self._refresh, self._access)
        if hint != REFRESH_HINT and looks_like_jwt(token):
            order = (self._access, self._refresh)
        for attempt in order:
            if attempt(client, token, ip=ip, user_agent=user_agent):
                return

    def _refresh(
        self, client: AuthenticatedClient, token: str, *, ip: str, user_agent: str
    ) -> bool:
        record = self.login.store.get_refresh_token(refresh_token_hash(token))
        if record is None:
            return False
        if not same_client(record.client_id, client.client_id):
            log.info("revocation of another client's refresh token ignored")
            return True  # found, but not theirs: answered like a success
        now = self.login.clock()
        if self.login.store.revoke_session_family(record.family_id, now=now):
            self.login.store.audit(
                AuditEvent.SESSION_REVOKED,
                now=now,
                username=record.username,
                ip=ip,
                user_agent=user_agent,
                detail={"family": record.family_id, "why": "revocation"},
            )
        return True

    def _access(self, client: AuthenticatedClient, token: str, *, ip: str, user_agent: str) -> bool:
        if not looks_like_jwt(token):
            return False
        login = self.login
        now = login.clock()
        try:
            claims = login.access_token_claims(token)
        except InvalidMessage:
            return False  # not ours, or already expired: nothing left to revoke
        if not same_client(str(claims.get("client_id", "")), client.client_id):
            log.info("revocation of another client's access token ignored")
            return True
        jti = str(claims["jti"])
        if login.store.revoke_access_token(jti, exp=float(claims["exp"]), now=now):
            login.store.audit(
                AuditEvent.ACCESS_TOKEN_REVOKED,
                now=now,
                username=str(claims.get("sub", "")) or None,
                ip=ip,
                user_agent=user_agent,
                detail={"family": claims.get("sid"), "jti": jti},
            )
        return True
