"""Issue 8 §5.2: a length the form allows is a length the store keeps, and an
approval is never burned by a failure to mint (consume and mint are one step)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.clients import AntiPhishing, new_client
from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import MAX_FIELD, LoginRefused
from hatchway.flows.login.service import DeviceAuthorization, LoginService
from hatchway.login import ScramClient
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from hatchway.store import MAX_ID_LENGTH, MAX_USERNAME_LENGTH
from hatchway.store.schema import login_sessions, refresh_families
from tests.login.world import GRANT, PASSWORD, login_world


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:
        yield context


def _start(login: LoginService, client_id: str = "tv") -> DeviceAuthorization:
    return login.start(
        {"client_id": client_id, "login_hint": "alice"}, ip="192.0.2.1", user_agent="tv/1"
    )


def _token(login: LoginService, code: str, client_id: str = "tv") -> dict[str, Any]:
    return login.token(
        {"grant_type": GRANT, "device_code": code, "client_id": client_id},
        ip="192.0.2.1",
        user_agent="tv/1",
    )


def _approve(ctx: ServerContext, started: DeviceAuthorization) -> None:
    approval = ApprovalService(ctx.login)
    session = ctx.store.get_login_session_by_user_code(started.user_code)
    assert session is not None
    client = ScramClient(session.reference, PASSWORD, random=SeededRandom(b"phone"))
    first, exchange = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip="198.51.100.7"
    )
    result = approval.scram_finish(
        exchange=exchange, client_final=client.final(first), ip="198.51.100.7", user_agent="p"
    )
    assert result.status == "approved"


def test_one_length_limit_for_form_validator_and_schema() -> None:
    assert MAX_FIELD == MAX_ID_LENGTH == login_sessions.c.client_id.type.length  # type: ignore[attr-defined]
    assert refresh_families.c.client_id.type.length == MAX_ID_LENGTH  # type: ignore[attr-defined]
    assert login_sessions.c.username.type.length == MAX_USERNAME_LENGTH  # type: ignore[attr-defined]


def test_a_client_id_one_past_the_limit_is_refused_at_start(ctx: ServerContext) -> None:
    """Before: 256 characters passed the form, the approval, then burned at the mint."""
    with pytest.raises(LoginRefused) as refused:
        _start(ctx.login, "c" * (MAX_ID_LENGTH + 1))
    # Too long to be any registered client's id: refused before a session exists.
    assert (refused.value.error, refused.value.status_hint) == ("invalid_client", 400)
    with pytest.raises(LoginRefused):
        ctx.login.start(
            {"client_id": "tv", "login_hint": "a" * (MAX_USERNAME_LENGTH + 1)},
            ip="192.0.2.1",
            user_agent="tv/1",
        )


def test_a_client_id_at_the_limit_signs_in(ctx: ServerContext) -> None:
    client_id = "c" * MAX_ID_LENGTH
    record, _ = new_client(
        client_id, "Longest id", now=0, random=SeededRandom(b"c"), anti_phishing=AntiPhishing.NONE
    )
    ctx.store.add_client(record)
    started = _start(ctx.login, client_id)
    _approve(ctx, started)
    tokens = _token(ctx.login, started.device_code, client_id)
    assert ctx.login.verify_access_token(tokens["access_token"])["client_id"] == client_id


def test_a_failed_mint_leaves_the_approval_for_the_next_poll(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: CONSUMED was committed first, so the poll answered 500, the next invalid_grant."""
    started = _start(ctx.login)
    _approve(ctx, started)
    real = ctx.store.create_refresh_token
    calls = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database went away mid-mint")
        return real(*args, **kwargs)

    monkeypatch.setattr(ctx.store, "create_refresh_token", fails_once)
    with pytest.raises(ConnectionError):
        _token(ctx.login, started.device_code)
    session = ctx.store.get_login_session_by_user_code(started.user_code)
    assert session is not None and session.state.value == "approved"
    tokens = _token(ctx.login, started.device_code)  # the retry gets the tokens
    assert ctx.login.verify_access_token(tokens["access_token"])["sub"] == "alice"
    with pytest.raises(LoginRefused) as again:
        _token(ctx.login, started.device_code)
    assert again.value.error == "invalid_grant"


def test_racing_collectors_get_one_token_set_and_leave_no_live_orphans(
    ctx: ServerContext,
) -> None:
    started = _start(ctx.login)
    _approve(ctx, started)
    # Two LoginService objects on one store: two replicas, no shared write lock.
    other = LoginService(
        store=ctx.store,
        identity=ctx.identity,
        settings=ctx.settings,
        clock=ctx.login.clock,
        random=SeededRandom(b"replica b"),
    )
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def collect(login: LoginService) -> None:
        barrier.wait()
        try:
            outcomes.append(_token(login, started.device_code))
        except LoginRefused as exc:
            outcomes.append(exc.error)

    threads = [threading.Thread(target=collect, args=(s,)) for s in (ctx.login, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    issued = [o for o in outcomes if isinstance(o, dict)]
    assert len(issued) == 1
    assert [o for o in outcomes if not isinstance(o, dict)] == ["invalid_grant"]
    live = ctx.store.list_sessions("alice")
    assert [f.family_id for f in live] == [
        ctx.login.verify_access_token(issued[0]["access_token"])["sid"]
    ]
