"""RFC 7662 token introspection: ``POST /oauth/introspect``.

For resource servers, which authenticate as registered *confidential* clients
(the route refuses public ones with ``invalid_client``, RFC 7662 §2.1 / §4).

* An **access token** is active when its signature, ``typ``, ``iss``, ``aud`` and
  lifetime check out, its session family is live (not revoked, not past its
  absolute end), its ``jti`` was not revoked, and the account is enabled: the
  same test as ``/api/whoami`` (``LoginService.verify_access_token``). Any
  confidential client may introspect access tokens; that is what resource
  servers are for.
* A **refresh token** is introspected only by the client it was issued to (a
  resource server has no business with refresh tokens, §4 "token scanning").
  It is active while unused, unexpired and its family is live.

Anything else is ``{"active": false}`` and nothing more (§2.2): an unknown token,
someone else's refresh token, a revoked or expired one all look alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hatchway.errors import InvalidMessage
from hatchway.flows.login.tokens import refresh_token_hash
from hatchway.flows.oauth.client_auth import AuthenticatedClient
from hatchway.flows.oauth.revocation import MAX_TOKEN, REFRESH_HINT, looks_like_jwt, same_client

if TYPE_CHECKING:  # flows/login/service.py imports this package
    from hatchway.flows.login.service import LoginService

INTROSPECTION_PATH = "/oauth/introspect"
INACTIVE: dict[str, Any] = {"active": False}
_ACCESS_FIELDS = ("scope", "client_id", "exp", "iat", "sub", "aud", "iss", "jti")


class TokenIntrospection:
    def __init__(self, login: LoginService) -> None:
        self.login = login

    def introspect(
        self, client: AuthenticatedClient, token: str, hint: str | None
    ) -> dict[str, Any]:
        if not token or len(token) > MAX_TOKEN:
            return dict(INACTIVE)
        if looks_like_jwt(token) and hint != REFRESH_HINT:
            return self._access(token) or self._refresh(client, token) or dict(INACTIVE)
        return self._refresh(client, token) or self._access(token) or dict(INACTIVE)

    def _access(self, token: str) -> dict[str, Any] | None:
        if not looks_like_jwt(token):
            return None
        try:
            claims = self.login.verify_access_token(token)
        except InvalidMessage:
            return None
        body: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        body.update({name: claims[name] for name in _ACCESS_FIELDS if name in claims})
        body["username"] = claims["sub"]
        return body

    def _refresh(self, client: AuthenticatedClient, token: str) -> dict[str, Any] | None:
        store = self.login.store
        record = store.get_refresh_token(refresh_token_hash(token))
        if record is None or not same_client(record.client_id, client.client_id):
            return None
        now = self.login.clock()
        family = store.get_session_family(record.family_id)
        if (
            record.used_at is not None
            or now >= record.expires_at
            or family is None
            or family.revoked_at is not None
            or not self.login._account_active(record.username, now)
        ):
            return None
        body: dict[str, Any] = {
            "active": True,
            "client_id": record.client_id,
            "username": record.username,
            "sub": record.username,
            "scope": record.scope,
            "exp": int(record.expires_at),
            "iat": int(record.created_at),
            "iss": self.login.settings.issuer,
        }
        return body
