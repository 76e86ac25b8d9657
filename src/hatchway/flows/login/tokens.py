"""Token issue for the cross-device login: access JWT, rotating refresh token.

* The access token is a short-lived JWT signed by the server (RFC 9068 profile,
  ``typ`` ``at+jwt``, ``aud`` the issuer's ``/api``), carrying the session
  family as ``sid`` so that revoking the session also stops the access token
  at the protected endpoint, not only at the next refresh.
* The refresh token is 256 random bits, stored only as its SHA-256, rotated on
  every use (RFC 6749 §6, OAuth 2.1 §4.3.1); presenting a rotated one again
  revokes its whole family (RFC 6819 §5.2.2.3) — unless it comes back within
  ``HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL`` seconds while its successor is still
  unused: that is a client retry, and it gets the same successor back
  (:mod:`hatchway.flows.oauth.successor`). A sign-in ends for good
  ``HATCHWAY_LOGIN_REFRESH_MAX_LIFETIME`` after it began; access tokens never
  outlive it either.
* Lifetimes are the registered client's (``hatchway clients add --access-ttl
  --refresh-ttl``) when it has its own, else the server's defaults.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hatchway.clients import ClientRecord
from hatchway.clients.model import ACCESS_TTL_RANGE
from hatchway.config import Settings
from hatchway.errors import InvalidMessage
from hatchway.flows.login.common import MAX_FIELD, LoginRefused, b64url
from hatchway.flows.oauth.successor import open_successor, seal_successor
from hatchway.login import IssueTokens
from hatchway.runtime import Clock, Random
from hatchway.store import Store
from hatchway.store.login_errors import RefreshTokenInvalid, RefreshTokenReused
from hatchway.store.login_records import AuditEvent
from hatchway.tokens import sign_jwt, verify_jwt

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - RFC 9068 §2.1 media type, not a secret
REFRESH_GRANT = "refresh_token"
#: Longest access token lifetime any setting or client may ask for (seconds).
MAX_ACCESS_TOKEN_LIFETIME = ACCESS_TTL_RANGE[1]
_MAX_FIELD = MAX_FIELD


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        raise LoginRefused("invalid_request", f"missing or malformed {name}")
    return value


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def refresh_token_hash(token: str) -> bytes:
    """How the store knows a refresh token: its SHA-256, never the token."""
    return _sha256(token)


class TokenGrants:
    """Minting, refresh and verification; mixed into ``LoginService``."""

    store: Store
    settings: Settings
    clock: Clock
    random: Random
    _signing_jwk: dict[str, Any]
    _verifying_jwk: dict[str, Any]

    def _account_active(self, username: str, now: float) -> bool:
        raise NotImplementedError  # pragma: no cover - LoginService provides it

    def _access_ttl(self, client: ClientRecord) -> int:
        return client.access_ttl or self.settings.login_access_token_ttl

    def _refresh_ttl(self, client: ClientRecord) -> int:
        """Sliding lifetime of each refresh token; the store cuts it to the
        sign-in's absolute end."""
        return client.refresh_ttl or self.settings.login_refresh_token_ttl

    def _refresh_grant(
        self, form: dict[str, str], *, ip: str, user_agent: str, client: ClientRecord
    ) -> dict[str, Any]:
        presented = _field(form, "refresh_token")
        client_id = client.client_id
        now = self.clock()
        old_hash = _sha256(presented)
        record = self.store.get_refresh_token(old_hash)
        if record is None or record.client_id != client_id:
            raise LoginRefused("invalid_grant", reason="unknown refresh token or wrong client")
        if not self._account_active(record.username, now):
            raise LoginRefused("invalid_grant", reason="account disabled")
        new_token = b64url(self.random(32))
        sealed = seal_successor(presented, new_token, old_hash=old_hash, random=self.random)
        try:
            rotation = self.store.rotate_refresh_token(
                old_hash,
                _sha256(new_token),
                now=now,
                expires_at=now + self._refresh_ttl(client),
                reuse_interval=self.settings.login_refresh_reuse_interval,
                sealed_successor=sealed,
            )
        except RefreshTokenReused:
            self.store.audit(
                AuditEvent.SESSION_REVOKED,
                now=now,
                username=record.username,
                ip=ip,
                user_agent=user_agent,
                detail={"family": record.family_id, "why": "reuse"},
            )
            raise LoginRefused("invalid_grant", reason="refresh token reused") from None
        except RefreshTokenInvalid:
            raise LoginRefused("invalid_grant", reason="refresh token invalid") from None
        rotated = rotation.token
        if rotation.sealed_successor is not None:
            # A retry: hand back the successor the first attempt minted.
            try:
                new_token = open_successor(presented, rotation.sealed_successor, old_hash=old_hash)
            except InvalidMessage:
                raise LoginRefused("invalid_grant", reason="sealed successor corrupt") from None
        self.store.audit(
            AuditEvent.TOKEN_REFRESHED,
            now=now,
            username=rotated.username,
            ip=ip,
            user_agent=user_agent,
            detail={"family": rotated.family_id, "retry": rotation.sealed_successor is not None},
        )
        return self._token_response(
            rotated.username,
            rotated.client_id,
            rotated.scope,
            rotated.family_id,
            new_token,
            now,
            ttl=self._access_ttl(client),
            session_end=rotated.session_expires_at,
        )

    def _mint(self, issue: IssueTokens, *, now: float, client: ClientRecord) -> dict[str, Any]:
        # ``sub`` is the account's name as stored, not the login_hint as typed
        # ("ALICE", full-width letters): one account, one subject.
        account = self.store.get_user(issue.username)
        if account is None:
            raise LoginRefused("access_denied", reason="account removed after approval")
        username = account.username
        # Hex, not base64url: an id that began with "-" would read as an option in
        # `hatchway sessions revoke ID`.
        family = self.random(16).hex()
        refresh = b64url(self.random(32))
        session_end = now + self.settings.login_refresh_max_lifetime
        self.store.create_refresh_token(
            _sha256(refresh),
            username=username,
            client_id=issue.client_id,
            device_name=issue.device_name,
            session_family=family,
            now=now,
            expires_at=now + self._refresh_ttl(client),
            scope=issue.scope,
            session_expires_at=session_end,
        )
        return self._token_response(
            username,
            issue.client_id,
            issue.scope,
            family,
            refresh,
            now,
            ttl=self._access_ttl(client),
            session_end=session_end,
        )

    def _token_response(
        self,
        username: str,
        client_id: str,
        scope: str,
        family: str,
        refresh: str,
        now: float,
        *,
        ttl: int,
        session_end: float | None,
    ) -> dict[str, Any]:
        iat = int(now)
        exp = iat + ttl
        if session_end is not None:
            exp = min(exp, int(session_end))  # never outlive the sign-in
        claims = {
            "iss": self.settings.issuer,
            "aud": self.audience,
            "sub": username,
            "client_id": client_id,
            "scope": scope,
            "sid": family,
            "iat": iat,
            "exp": exp,
            "jti": b64url(self.random(16)),
        }
        access = sign_jwt(self._signing_jwk, typ=ACCESS_TOKEN_TYP, claims=claims)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": exp - iat,
            "refresh_token": refresh,
        }
        if scope:
            body["scope"] = scope
        return body

    # --- the protected API ----------------------------------------------------

    @property
    def max_access_token_lifetime(self) -> int:
        # Per-client lifetimes differ, so verification bounds by the largest any
        # client may be given; the signature, not this bound, is what protects.
        return MAX_ACCESS_TOKEN_LIFETIME

    @property
    def audience(self) -> str:
        return self.settings.issuer + "/api"

    def access_token_claims(self, token: str) -> dict[str, Any]:
        """Claims of an access token hatchway signed and that has not expired:
        what an offline check sees (no session, revocation or account checks)."""
        return verify_jwt(
            token,
            self._verifying_jwk,
            typ=ACCESS_TOKEN_TYP,
            issuer=self.settings.issuer,
            audience=self.audience,
            now=self.clock(),
            max_lifetime=self.max_access_token_lifetime,
        )

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """Claims of a valid access token whose session is not revoked; else InvalidMessage."""
        now = self.clock()
        claims = self.access_token_claims(token)
        family = self.store.get_session_family(str(claims.get("sid", "")))
        if family is None or family.revoked_at is not None:
            raise InvalidMessage("session revoked")
        if family.expires_at is not None and now >= family.expires_at:
            raise InvalidMessage("session past its absolute lifetime")
        if self.store.access_token_revoked(str(claims["jti"])):
            raise InvalidMessage("access token revoked")
        if not self._account_active(str(claims.get("sub", "")), now):
            raise InvalidMessage("account disabled")
        return claims
