"""Issue 8 defect 5.1: a victim's successful sign-in must not end an attacker's lock.

Before revision 0003_clients, ``record_password_success`` bumped
``users.updated_at`` and the password guard read that same column as "the
operator's last unlock", so every (account, IP) failure counter recorded
before the victim's sign-in was forgotten: an attacker's one-hour lock ended
the moment the real owner signed in anywhere. The operator's unlock now has
its own column (``users.unlocked_at``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import LoginRefused
from hatchway.flows.login.guard import ACCOUNT_IP_POLICY
from hatchway.flows.login.service import DeviceAuthorization, LoginService
from hatchway.login import ScramClient
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from tests.login.world import PASSWORD, login_world

ATTACKER = "203.0.113.66"
VICTIM = "198.51.100.7"


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:
        yield context


def _start(login: LoginService) -> DeviceAuthorization:
    return login.start(
        {"client_id": "tv", "login_hint": "alice", "device_name": "TV"},
        ip="192.0.2.1",
        user_agent="tv/1",
    )


def _approve(
    approval: ApprovalService, started: DeviceAuthorization, password: str, ip: str
) -> str:
    session = approval.store.get_login_session_by_user_code(started.user_code)
    assert session is not None
    client = ScramClient(session.reference, password, random=SeededRandom(ip.encode()))
    server_first, exchange = approval.scram_start(
        user_code=started.user_code,
        client_first=client.first(),
        ip=ip,
    )
    return approval.scram_finish(
        exchange=exchange, client_final=client.final(server_first), ip=ip, user_agent="p"
    ).status


def _lock_out_attacker(ctx: ServerContext, approval: ApprovalService, clock: FrozenClock) -> None:
    failures = 0
    started = _start(ctx.login)
    while failures < ACCOUNT_IP_POLICY.lockout_after:
        try:
            _approve(approval, started, "guess", ATTACKER)
        except LoginRefused as exc:
            if exc.error == "access_denied":
                failures += 1
                clock.advance(ACCOUNT_IP_POLICY.max_delay + 1)
            else:  # this session had its wrong proofs and was denied: start another
                assert exc.status_hint == 404, exc.error
                started = _start(ctx.login)


def _attacker_refused(approval: ApprovalService, ctx: ServerContext) -> str:
    with pytest.raises(LoginRefused) as refused:
        _approve(approval, _start(ctx.login), "guess", ATTACKER)
    return refused.value.error


def test_victims_sign_in_keeps_the_attackers_lock(ctx: ServerContext, clock: FrozenClock) -> None:
    approval = ApprovalService(ctx.login)
    _lock_out_attacker(ctx, approval, clock)
    assert _attacker_refused(approval, ctx) == "too_many_attempts"
    clock.advance(61)  # past the account-wide back-off, well inside the 1 h lock
    assert _approve(approval, _start(ctx.login), PASSWORD, VICTIM) == "approved"
    clock.advance(1)
    # Before the fix the victim's sign-in reset this to a free wrong guess.
    assert _attacker_refused(approval, ctx) == "too_many_attempts"


def test_operator_unlock_still_clears_the_lock(ctx: ServerContext, clock: FrozenClock) -> None:
    approval = ApprovalService(ctx.login)
    _lock_out_attacker(ctx, approval, clock)
    assert _attacker_refused(approval, ctx) == "too_many_attempts"
    clock.advance(1)
    ctx.store.unlock_user("alice", now=clock())
    clock.advance(1)
    assert _attacker_refused(approval, ctx) == "access_denied"  # a wrong guess, not a lock
