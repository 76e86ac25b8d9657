"""RFC 7009 revocation and RFC 7662 introspection over the real login services
(SQLite store, injected clock): who may revoke or see what, and that revoking
makes whoami and introspection refuse the token."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.clients import AuthMethod, new_client
from hatchway.errors import InvalidMessage
from hatchway.flows.login.common import LoginRefused
from hatchway.flows.oauth.client_auth import AuthenticatedClient, authenticator_for
from hatchway.flows.oauth.introspection import TokenIntrospection
from hatchway.flows.oauth.revocation import TokenRevocation
from hatchway.login import IssueTokens
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from hatchway.store import AuditEvent
from tests.login.world import login_world


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:
        rng = SeededRandom(b"clients")
        for client_id, method in (  # "tv" (public) is login_world's
            ("radio", AuthMethod.NONE),
            ("rs", AuthMethod.CLIENT_SECRET_POST),
        ):
            record, secret = new_client(client_id, client_id, now=0, random=rng, auth_method=method)
            context.store.add_client(record)
            if secret:
                context.store.set_flag("test_rs_secret", secret, now=0)
        yield context


def client(ctx: ServerContext, client_id: str) -> AuthenticatedClient:
    auth = authenticator_for(
        ctx.store, issuer=ctx.settings.issuer, token_endpoint="x", clock=ctx.login.clock
    )
    form = {"client_id": client_id}
    if client_id == "rs":
        form["client_secret"] = ctx.store.get_flag("test_rs_secret") or ""
    return auth.authenticate(None, form, allow_public=True)


def sign_in(ctx: ServerContext, client_id: str = "tv") -> dict[str, Any]:
    issue = IssueTokens(username="alice", client_id=client_id, scope="profile", device_name="TV")
    client = ctx.store.get_client(client_id)
    assert client is not None
    return ctx.login._mint(issue, now=ctx.login.clock(), client=client)


def revoke(ctx: ServerContext, who: str, token: str, hint: str | None = None) -> None:
    TokenRevocation(ctx.login).revoke(client(ctx, who), token, hint, ip="x", user_agent="y")


def introspect(ctx: ServerContext, token: str, hint: str | None = None) -> dict[str, Any]:
    return TokenIntrospection(ctx.login).introspect(client(ctx, "rs"), token, hint)


def test_introspection_agrees_with_the_token(ctx: ServerContext) -> None:
    tokens = sign_in(ctx)
    body = introspect(ctx, tokens["access_token"])
    claims = ctx.login.verify_access_token(tokens["access_token"])
    assert body["active"] is True and body["token_type"] == "Bearer"
    for name in ("sub", "client_id", "scope", "exp", "iat", "iss", "aud", "jti"):
        assert body[name] == claims[name]
    assert body["username"] == "alice"
    # A resource server does not get to see refresh tokens (not its client's).
    assert introspect(ctx, tokens["refresh_token"]) == {"active": False}


def test_refresh_revocation_ends_the_whole_session(ctx: ServerContext) -> None:
    tokens = sign_in(ctx)
    revoke(ctx, "tv", tokens["refresh_token"], "refresh_token")
    assert introspect(ctx, tokens["access_token"]) == {"active": False}
    with pytest.raises(InvalidMessage):
        ctx.login.verify_access_token(tokens["access_token"])
    family = ctx.store.get_session_family(sid(tokens))
    assert family is not None and family.revoked_at is not None
    (event,) = [e for e in ctx.store.list_audit() if e.event is AuditEvent.SESSION_REVOKED]
    assert event.detail == {"family": sid(tokens), "why": "revocation"}


def sid(tokens: dict[str, Any]) -> str:
    payload = tokens["access_token"].split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def test_access_token_revocation_is_that_token_only(ctx: ServerContext) -> None:
    tokens = sign_in(ctx)
    other = ctx.login.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "tv",
        },
        ip="x",
        user_agent="y",
    )
    revoke(ctx, "tv", tokens["access_token"])  # no hint: found as a JWT
    assert introspect(ctx, tokens["access_token"]) == {"active": False}
    with pytest.raises(InvalidMessage):
        ctx.login.verify_access_token(tokens["access_token"])
    # The session and its newer access token live on.
    assert introspect(ctx, other["access_token"])["active"] is True
    assert (
        ctx.store.access_token_revoked(ctx.login.verify_access_token(other["access_token"])["jti"])
        is False
    )


def test_another_clients_token_is_not_revoked(ctx: ServerContext) -> None:
    """RFC 7009 §2.1: the server checks the token was issued to the requester;
    the answer is the same 200 either way, so nothing leaks."""
    tokens = sign_in(ctx, "tv")
    revoke(ctx, "radio", tokens["refresh_token"])
    revoke(ctx, "radio", tokens["access_token"])
    assert introspect(ctx, tokens["access_token"])["active"] is True
    assert ctx.login.verify_access_token(tokens["access_token"])["sub"] == "alice"


def test_junk_tokens_are_ignored(ctx: ServerContext) -> None:
    tokens = sign_in(ctx)
    for junk in (
        "",
        "x",
        "a.b.c",
        tokens["access_token"][:-3],
        "x" * 10000,
        tokens["refresh_token"][:-1],
    ):
        revoke(ctx, "tv", junk)
        assert introspect(ctx, junk) == {"active": False}
    assert introspect(ctx, tokens["access_token"])["active"] is True


def test_expired_and_rotated_tokens_are_inactive(ctx: ServerContext, clock: FrozenClock) -> None:
    tokens = sign_in(ctx)
    clock.advance(ctx.settings.login_access_token_ttl)
    assert introspect(ctx, tokens["access_token"]) == {"active": False}


def test_owner_can_introspect_its_refresh_token(ctx: ServerContext, clock: FrozenClock) -> None:
    tokens = sign_in(ctx, "rs")  # a confidential client that signed a device in itself
    body = introspect(ctx, tokens["refresh_token"], "refresh_token")
    assert body["active"] is True and body["client_id"] == "rs" and "token_type" not in body
    ctx.login.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "rs",
            "client_secret": ctx.store.get_flag("test_rs_secret") or "",
        },
        ip="x",
        user_agent="y",
    )
    assert introspect(ctx, tokens["refresh_token"]) == {"active": False}  # spent


def test_private_key_jwt_client_at_the_token_endpoint(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    """A registered private_key_jwt client refreshes with an RFC 7523 assertion;
    without one, or replaying one, it gets invalid_client."""
    from jwcrypto import jwk as jc_jwk
    from jwcrypto import jwt as jc_jwt

    key = jc_jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="kiosk-1")
    record, _ = new_client(
        "kiosk",
        "Kiosk",
        now=0,
        random=SeededRandom(b"kiosk"),
        auth_method=AuthMethod.PRIVATE_KEY_JWT,
        jwks={"keys": [json.loads(key.export_public())]},
    )
    ctx.store.add_client(record)
    tokens = sign_in(ctx, "kiosk")

    def assertion(jti: str) -> str:
        now = int(clock())
        claims = {
            "iss": "kiosk",
            "sub": "kiosk",
            "aud": ctx.settings.issuer,
            "exp": now + 60,
            "jti": jti,
        }
        signed = jc_jwt.JWT(header={"alg": "EdDSA", "kid": "kiosk-1"}, claims=claims)
        signed.make_signed_token(key)
        return str(signed.serialize())

    def refresh(token: str, **auth: str) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "kiosk"}
        return ctx.login.token({**form, **auth}, ip="x", user_agent="y")

    jwt_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    first = assertion("a1")
    refreshed = refresh(
        tokens["refresh_token"], client_assertion_type=jwt_type, client_assertion=first
    )
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    for auth in ({}, {"client_assertion_type": jwt_type, "client_assertion": first}):
        with pytest.raises(LoginRefused) as caught:
            refresh(refreshed["refresh_token"], **auth)
        assert caught.value.error == "invalid_client"
    # The failures spent nothing: a fresh assertion still refreshes.
    assert refresh(
        refreshed["refresh_token"], client_assertion_type=jwt_type, client_assertion=assertion("a2")
    )["access_token"]
