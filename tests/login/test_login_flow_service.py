"""The login flow services (flows/login*.py) against a real SQLite store, with an
injected clock: RFC 8628 §3.4–3.5 answers, SCRAM approval, lockout, audit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.clients import AntiPhishing
from hatchway.config import settings_from_env
from hatchway.errors import InvalidMessage
from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import LoginRefused, login_channel, mask_username
from hatchway.flows.login.guard import ACCOUNT_IP_POLICY, SESSION_MAX_FAILURES
from hatchway.flows.login.polls import DECISIONS_CHANNEL
from hatchway.flows.login.service import DeviceAuthorization, LoginService
from hatchway.login import ScramClient
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from tests.login.world import GRANT, PASSWORD, login_world


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    def publish(self, channel: str, payload: str) -> None:
        self.published.append((channel, payload))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:
        yield context


def _start(login: LoginService, user: str = "alice") -> DeviceAuthorization:
    return login.start(
        {"client_id": "tv", "login_hint": user, "device_name": "TV"},
        ip="192.0.2.1",
        user_agent="tv/1",
    )


def _token(login: LoginService, code: str, **extra: str) -> dict[str, object]:
    return login.token(
        {"grant_type": GRANT, "device_code": code, "client_id": "tv", **extra},
        ip="192.0.2.1",
        user_agent="tv/1",
    )


def _approve(approval: ApprovalService, started: DeviceAuthorization, password: str) -> str:
    # Looked up directly, not through page(): that counts against the per-code limit.
    view = approval.store.get_login_session_by_user_code(started.user_code)
    if view is None:  # ended: the page would say so
        raise LoginRefused("invalid_request", status=404)
    client = ScramClient(view.reference, password, random=SeededRandom(b"phone"))
    server_first, exchange = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip="198.51.100.7"
    )
    result = approval.scram_finish(
        exchange=exchange,
        client_final=client.final(server_first),
        ip="198.51.100.7",
        user_agent="phone/1",
    )
    client.verify(result.server_final)
    return result.status


def _error(fn: object, *args: object, **kwargs: object) -> LoginRefused:
    with pytest.raises(LoginRefused) as refused:
        fn(*args, **kwargs)  # type: ignore[operator]
    return refused.value


def test_pending_slow_down_then_issue_once(ctx: ServerContext, clock: FrozenClock) -> None:
    bus = Recorder()
    ctx.login.bus = bus
    approval = ApprovalService(ctx.login)
    started = _start(ctx.login)
    assert _error(_token, ctx.login, started.device_code).error == "authorization_pending"
    clock.advance(1)
    slow = _error(_token, ctx.login, started.device_code)
    assert (slow.error, slow.interval) == ("slow_down", 10)
    assert _approve(approval, started, PASSWORD) == "approved"
    ref = ctx.store.get_login_session_by_user_code(started.user_code)
    assert ref is not None and bus.published == [
        (login_channel(ref.reference), "approved"),
        (DECISIONS_CHANNEL, ref.reference),  # every replica stops answering it from memory
    ]
    # Collecting an approved session is exempt from slow_down (push wakes the device).
    tokens = _token(ctx.login, started.device_code)
    claims = ctx.login.verify_access_token(str(tokens["access_token"]))
    assert claims["sub"] == "alice" and claims["client_id"] == "tv"
    assert _error(_token, ctx.login, started.device_code).error == "invalid_grant"
    events = [r.event.value for r in ctx.store.list_audit(10)]
    assert events[:3] == ["consumed", "approved", "start"]


def test_wrong_password_backs_off_then_ends_the_session(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    approval = ApprovalService(ctx.login)
    started = _start(ctx.login)
    assert _error(_approve, approval, started, "wrong").error == "access_denied"
    for failures in range(1, SESSION_MAX_FAILURES):
        clock.advance(ACCOUNT_IP_POLICY.delay_after(failures) + 0.1)  # just past each back-off
        _error(_approve, approval, started, "wrong")
    # The session has had its N wrong proofs: it is denied, even for the right one.
    assert _error(_approve, approval, started, PASSWORD).status_hint == 404
    assert _error(_token, ctx.login, started.device_code).error == "access_denied"
    events = [r.event.value for r in ctx.store.list_audit(3)]
    assert events[:2] == ["denied", "password_failed"]
    # The store's account row was never written by a failure (no lockout state there).
    user = ctx.store.get_user("alice")
    assert user is not None and user.failed_attempts == 0 and not user.locked


def test_unknown_account_answers_like_a_real_one(ctx: ServerContext, clock: FrozenClock) -> None:
    approval = ApprovalService(ctx.login)
    real, fake = _start(ctx.login, "alice"), _start(ctx.login, "mallory")
    assert real.to_json().keys() == fake.to_json().keys()
    answers = []
    for started in (real, fake):
        errors = []
        for _ in range(5):
            errors.append(_error(_approve, approval, started, "guess").error)
        answers.append(errors)
    # Same answers, including the back-off after the free failures.
    assert answers[0] == answers[1]
    assert "too_many_attempts" in answers[0]


def test_deny_and_expiry(ctx: ServerContext, clock: FrozenClock) -> None:
    approval = ApprovalService(ctx.login)
    started = _start(ctx.login)
    assert approval.deny(user_code=started.user_code, ip="198.51.100.7", user_agent="p") == (
        "denied"
    )
    assert _error(_token, ctx.login, started.device_code).error == "access_denied"
    late = _start(ctx.login)
    clock.advance(301)
    # Swept to EXPIRED (and audited) by the page hit itself, or expired on read.
    assert approval.page(late.user_code, ip="198.51.100.7").status in ("expired", "unknown")
    assert _error(_token, ctx.login, late.device_code).error == "expired_token"


def test_sealed_exchange_cannot_be_tampered_with(ctx: ServerContext) -> None:
    approval = ApprovalService(ctx.login)
    started = _start(ctx.login)
    view = approval.page(started.user_code, ip="198.51.100.7")
    assert view.session is not None
    client = ScramClient(view.session.reference, PASSWORD, random=SeededRandom())
    server_first, exchange = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip="198.51.100.7"
    )
    body, _, mac = exchange.partition(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    refused = _error(
        approval.scram_finish,
        exchange=forged,
        client_final=client.final(server_first),
        ip="x",
        user_agent="y",
    )
    assert refused.error == "invalid_request"


def test_number_matching(tmp_path: Path, clock: FrozenClock) -> None:
    """The phone-number mode (today's number matching, now a per-client choice)."""
    with login_world(tmp_path, clock, anti_phishing=AntiPhishing.PHONE_NUMBER) as ctx:
        approval = ApprovalService(ctx.login)
        started = _start(ctx.login)
        view = approval.page(started.user_code, ip="198.51.100.7")
        assert view.session is not None and view.session.match_number is not None
        assert view.session.code_choices is None
        assert _approve(approval, started, PASSWORD) == "approved"
        pending = _error(_token, ctx.login, started.device_code)
        assert (pending.error, pending.description) == (
            "authorization_pending",
            "awaiting_match_number",
        )
        tokens = _token(ctx.login, started.device_code, match_number=view.session.match_number)
        assert "access_token" in tokens


def test_first_run_registers_the_cli_client_with_confirm_code(
    tmp_path: Path, clock: FrozenClock
) -> None:
    ctx = ServerContext.create(
        settings_from_env({"HATCHWAY_DATA_DIR": str(tmp_path / "d")}), clock=clock
    )
    try:
        cli = ctx.store.get_client("hatchway-cli")
        assert cli is not None and cli.anti_phishing is AntiPhishing.CONFIRM_CODE
        started = ctx.login.start(
            {"client_id": "hatchway-cli", "login_hint": "alice"}, ip="192.0.2.1", user_agent="x"
        )
        session = ctx.store.get_login_session_by_user_code(started.user_code)
        assert session is not None and not session.number_matching
        assert session.code_choices is not None and started.user_code in session.code_choices
        assert session.scope == "profile"  # the client's registered scopes
        # An operator's removal is not undone at the next start.
        ctx.store.remove_client("hatchway-cli")
    finally:
        ctx.close()
    again = ServerContext.create(
        settings_from_env({"HATCHWAY_DATA_DIR": str(tmp_path / "d")}), clock=clock
    )
    try:
        assert again.store.get_client("hatchway-cli") is None
    finally:
        again.close()


def test_admin_switch(ctx: ServerContext) -> None:
    ctx.login.set_enabled(False)
    assert _error(_start, ctx.login).status_hint == 503
    ctx.login.set_enabled(True)
    assert _start(ctx.login).user_code


def test_access_token_checks(ctx: ServerContext) -> None:
    with pytest.raises(InvalidMessage):
        ctx.login.verify_access_token("not.a.jwt")


def test_mask_username() -> None:
    assert mask_username("alice") == "a•••e"
    assert mask_username("al") == "a•••"
