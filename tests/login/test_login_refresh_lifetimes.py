"""Refresh tokens at the token endpoint (issue 8 §3): an absolute lifetime for a
sign-in, and a reuse interval so a client's retry is not mistaken for theft,
while real reuse still ends the session (RFC 6819 §5.2.2.3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hatchway.errors import InvalidMessage
from hatchway.flows.login.common import LoginRefused
from hatchway.flows.oauth.successor import open_successor, seal_successor
from hatchway.login import IssueTokens
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from hatchway.store.schema import refresh_tokens
from tests.login.world import login_world


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(
        tmp_path,
        clock,
        HATCHWAY_LOGIN_REFRESH_TOKEN_TTL="1800",
        HATCHWAY_LOGIN_REFRESH_MAX_LIFETIME="3600",
        HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL="10",
    ) as context:
        yield context


def sign_in(ctx: ServerContext) -> dict[str, Any]:
    """Tokens as the device_code grant mints them once a session is approved
    (approval itself is covered by test_login_flow_service.py)."""
    issue = IssueTokens(username="alice", client_id="tv", scope="", device_name="TV")
    client = ctx.store.get_client("tv")
    assert client is not None
    return ctx.login._mint(issue, now=ctx.login.clock(), client=client)


def refresh(ctx: ServerContext, token: str, client_id: str = "tv") -> dict[str, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    return ctx.login.token(form, ip="192.0.2.1", user_agent="tv/1")


def refused(ctx: ServerContext, token: str) -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        refresh(ctx, token)
    return caught.value


def test_concurrent_refreshes_with_one_token_both_succeed(ctx: ServerContext) -> None:
    """A client that fires the same refresh twice at once (a retry racing the
    original) gets the same new refresh token twice and keeps its session."""
    first = sign_in(ctx)
    barrier = threading.Barrier(2)
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def body() -> None:
        barrier.wait()
        try:
            answers.append(refresh(ctx, first["refresh_token"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(answers) == 2
    assert answers[0]["refresh_token"] == answers[1]["refresh_token"] != first["refresh_token"]
    # Two access tokens (each its own jti), both good.
    assert answers[0]["access_token"] != answers[1]["access_token"]
    for answer in answers:
        assert ctx.login.verify_access_token(answer["access_token"])["sub"] == "alice"
    # The shared successor is the one live token and rotates on.
    assert refresh(ctx, answers[0]["refresh_token"])["refresh_token"]


def test_reuse_after_the_interval_ends_the_session(ctx: ServerContext, clock: FrozenClock) -> None:
    first = sign_in(ctx)
    second = refresh(ctx, first["refresh_token"])
    clock.advance(9)
    retry = refresh(ctx, first["refresh_token"])  # within 10 s: a retry
    assert retry["refresh_token"] == second["refresh_token"]
    clock.advance(2)  # 11 s after the rotation: a copy of the token
    assert refused(ctx, first["refresh_token"]).error == "invalid_grant"
    # The whole family is gone: the live refresh token and every access token.
    assert refused(ctx, second["refresh_token"]).error == "invalid_grant"
    with pytest.raises(InvalidMessage):
        ctx.login.verify_access_token(second["access_token"])


def test_old_token_after_the_successor_was_used_is_reuse(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    """Inside the interval, but the client already used the successor: theft."""
    first = sign_in(ctx)
    second = refresh(ctx, first["refresh_token"])
    clock.advance(1)
    third = refresh(ctx, second["refresh_token"])
    clock.advance(1)
    assert refused(ctx, first["refresh_token"]).error == "invalid_grant"
    assert refused(ctx, third["refresh_token"]).error == "invalid_grant"


def test_wrong_client_gets_no_retry(ctx: ServerContext) -> None:
    first = sign_in(ctx)
    refresh(ctx, first["refresh_token"])
    with pytest.raises(LoginRefused):
        refresh(ctx, first["refresh_token"], client_id="other")


def test_sign_in_ends_at_its_absolute_lifetime(ctx: ServerContext, clock: FrozenClock) -> None:
    """Refreshing every 20 minutes no longer slides the session forever."""
    start = clock()
    tokens = sign_in(ctx)
    while clock() + 1200 < start + 3600:
        clock.advance(1200)
        tokens = refresh(ctx, tokens["refresh_token"])
        claims = ctx.login.verify_access_token(tokens["access_token"])
        assert claims["exp"] <= start + 3600  # no access token outlives the sign-in
    clock.now = start + 3600
    assert refused(ctx, tokens["refresh_token"]).error == "invalid_grant"
    with pytest.raises(InvalidMessage):
        ctx.login.verify_access_token(tokens["access_token"])


def test_database_holds_no_live_token(ctx: ServerContext) -> None:
    """The sealed successor is ciphertext: a dump has neither token in clear."""
    first = sign_in(ctx)
    second = refresh(ctx, first["refresh_token"])
    with ctx.store.engine.connect() as conn:
        blobs = conn.execute(select(refresh_tokens.c.successor_sealed)).scalars().all()
    sealed = [bytes(b) for b in blobs if b is not None]
    assert len(sealed) == 1
    for token in (first["refresh_token"], second["refresh_token"]):
        assert token.encode() not in sealed[0]


def test_sealed_successor_opens_only_with_the_presented_token() -> None:
    rng = SeededRandom()
    sealed = seal_successor("old-token", "new-token", old_hash=b"h" * 32, random=rng)
    assert open_successor("old-token", sealed, old_hash=b"h" * 32) == "new-token"
    for presented, blob, bound in (
        ("other-token", sealed, b"h" * 32),  # wrong key
        ("old-token", sealed, b"g" * 32),  # moved to another row
        ("old-token", sealed[:-1], b"h" * 32),  # truncated
        ("old-token", sealed[:12], b"h" * 32),  # nonce only
        ("old-token", sealed[:5] + bytes([sealed[5] ^ 1]) + sealed[6:], b"h" * 32),  # tampered
    ):
        with pytest.raises(InvalidMessage):
            open_successor(presented, blob, old_hash=bound)


def test_lifetime_settings_are_validated() -> None:
    from hatchway.config import settings_from_env
    from hatchway.errors import ConfigurationError

    defaults = settings_from_env({})
    assert defaults.login_refresh_max_lifetime == 90 * 24 * 3600
    assert defaults.login_refresh_reuse_interval == 10
    assert settings_from_env({"HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL": "0"})
    for name, value in (
        ("HATCHWAY_LOGIN_REFRESH_MAX_LIFETIME", "59"),
        ("HATCHWAY_LOGIN_REFRESH_MAX_LIFETIME", "forever"),
        ("HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL", "61"),
        ("HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL", "-1"),
    ):
        with pytest.raises(
            ConfigurationError,
            match=name.removeprefix("HATCHWAY_").lower() if value != "forever" else name,
        ):
            settings_from_env({name: value})


def test_interval_zero_turns_retries_off(tmp_path: Path, clock: FrozenClock) -> None:
    with login_world(tmp_path, clock, HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL="0") as context:
        first = sign_in(context)
        refresh(context, first["refresh_token"])
        assert refused(context, first["refresh_token"]).error == "invalid_grant"
