"""Polls of PENDING sessions answered from memory (flows/login/polls.py): RFC 8628
§3.5 slow_down arithmetic through the service, no store write for an accepted
poll, the eviction bound, decisions seen after caching (same and other replica),
and what a restart keeps."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import LoginRefused
from hatchway.flows.login.polls import PendingPolls, start_decision_feed
from hatchway.flows.login.service import DeviceAuthorization, LoginService
from hatchway.login import ScramClient, hash_device_code, new_session
from hatchway.login.states import LoginSession
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from tests.login.world import GRANT, PASSWORD, login_world


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:
        yield context


@pytest.fixture
async def feed(ctx: ServerContext) -> AsyncIterator[None]:
    """The decision feed the HTTPS route starts, on this test's loop."""
    task = start_decision_feed(ctx.bus, ctx.login.pending)
    await asyncio.sleep(0)  # let it subscribe
    assert ctx.login.pending.trusting
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not ctx.login.pending.trusting


def _form(code: str) -> dict[str, str]:
    return {"grant_type": GRANT, "device_code": code, "client_id": "tv"}


def _start(login: LoginService) -> DeviceAuthorization:
    form = {"client_id": "tv", "login_hint": "alice", "device_name": "TV"}
    return login.start(form, ip="192.0.2.1", user_agent="tv/1")


def _answer(login: LoginService, code: str) -> LoginRefused:
    with pytest.raises(LoginRefused) as refused:
        login.token(_form(code), ip="192.0.2.1", user_agent="tv/1")
    return refused.value


def _stored(ctx: ServerContext, code: str) -> LoginSession:
    session = ctx.store.get_login_session_by_device_code_hash(hash_device_code(code))
    assert session is not None
    return session


def _approve(approval: ApprovalService, started: DeviceAuthorization) -> None:
    view = approval.store.get_login_session_by_user_code(started.user_code)
    assert view is not None
    client = ScramClient(view.reference, PASSWORD, random=SeededRandom(b"phone"))
    server_first, exchange = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip="198.51.100.7"
    )
    approval.scram_finish(
        exchange=exchange,
        client_final=client.final(server_first),
        ip="198.51.100.7",
        user_agent="phone/1",
    )


def _count_reads(ctx: ServerContext, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    reads: list[bytes] = []
    real = ctx.store.get_login_session_by_device_code_hash

    def counting(device_code_hash: bytes) -> LoginSession | None:
        reads.append(device_code_hash)
        return real(device_code_hash)

    monkeypatch.setattr(ctx.store, "get_login_session_by_device_code_hash", counting)
    return reads


def test_slow_down_arithmetic_through_the_service(ctx: ServerContext, clock: FrozenClock) -> None:
    code = _start(ctx.login).device_code
    assert _answer(ctx.login, code).error == "authorization_pending"  # accepted at t0
    # An accepted pending poll changes nothing durable, so nothing is written.
    assert _stored(ctx, code).last_poll_at is None
    clock.advance(1)
    assert (_answer(ctx.login, code).error, _answer(ctx.login, code).interval) == (
        "slow_down",
        15,  # two too-soon polls: +5 s each (RFC 8628 §3.5)
    )
    # The grown interval is stored at once (every replica and a restart see it),
    # with the last *accepted* poll, which slow_down never moves.
    stored = _stored(ctx, code)
    assert (stored.interval, stored.last_poll_at) == (15, clock.now - 1)
    clock.advance(13)  # t0 + 14 < t0 + 15: still counted from the accepted poll
    assert _answer(ctx.login, code).interval == 20
    clock.advance(6)  # t0 + 20
    assert _answer(ctx.login, code).error == "authorization_pending"
    clock.advance(19)  # t0 + 39 < t0 + 20 + 20
    assert _answer(ctx.login, code).interval == 25


def test_no_snapshot_answers_without_the_feed(
    ctx: ServerContext, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _start(ctx.login).device_code
    _answer(ctx.login, code)
    clock.advance(5)
    # Nobody would announce a decision made elsewhere: ask the store every time.
    assert ctx.login.poll_from_memory(_form(code)) is None
    reads = _count_reads(ctx, monkeypatch)
    assert _answer(ctx.login, code).error == "authorization_pending"
    assert len(reads) == 1


@pytest.mark.usefixtures("feed")
async def test_repeat_polls_are_answered_from_memory(
    ctx: ServerContext, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _start(ctx.login).device_code
    assert _answer(ctx.login, code).error == "authorization_pending"  # reads the store
    reads = _count_reads(ctx, monkeypatch)
    for _ in range(3):
        clock.advance(5)
        fast = ctx.login.poll_from_memory(_form(code))
        assert fast is not None
        assert fast.body() == {
            "error": "authorization_pending",
            "error_description": "awaiting_user",
        }
    assert reads == []
    # Too soon, a number, another client or a past deadline: the store decides.
    clock.advance(1)
    assert ctx.login.poll_from_memory(_form(code)) is None
    assert _answer(ctx.login, code).interval == 10
    clock.advance(10)
    assert ctx.login.poll_from_memory({**_form(code), "match_number": "42"}) is None
    assert ctx.login.poll_from_memory({**_form(code), "client_id": "other"}) is None
    assert ctx.login.poll_from_memory({**_form(code), "grant_type": "password"}) is None
    clock.advance(300)
    assert ctx.login.poll_from_memory(_form(code)) is None
    assert _answer(ctx.login, code).error == "expired_token"


@pytest.mark.usefixtures("feed")
async def test_approval_is_seen_after_caching(ctx: ServerContext, clock: FrozenClock) -> None:
    started = _start(ctx.login)
    _answer(ctx.login, started.device_code)
    clock.advance(5)
    assert ctx.login.poll_from_memory(_form(started.device_code)) is not None
    _approve(ApprovalService(ctx.login), started)
    clock.advance(5)
    assert ctx.login.poll_from_memory(_form(started.device_code)) is None
    tokens = ctx.login.token(_form(started.device_code), ip="192.0.2.1", user_agent="tv/1")
    assert tokens["token_type"] == "Bearer"
    assert _answer(ctx.login, started.device_code).error == "invalid_grant"


@pytest.mark.usefixtures("feed")
async def test_decision_on_another_replica_is_seen(ctx: ServerContext, clock: FrozenClock) -> None:
    # Replica B shares the store and the bus (as PostgreSQL provides), not memory.
    other = LoginService(
        store=ctx.store,
        identity=ctx.identity,
        settings=ctx.settings,
        clock=clock,
        random=SeededRandom(b"replica b"),
        bus=ctx.bus,
    )
    started = _start(ctx.login)
    _answer(ctx.login, started.device_code)
    clock.advance(5)
    assert ctx.login.poll_from_memory(_form(started.device_code)) is not None
    ApprovalService(other).deny(user_code=started.user_code, ip="198.51.100.7", user_agent="p")
    for _ in range(3):
        await asyncio.sleep(0)  # the bus delivers on the loop
    clock.advance(5)
    assert ctx.login.poll_from_memory(_form(started.device_code)) is None
    assert _answer(ctx.login, started.device_code).error == "access_denied"


@pytest.mark.usefixtures("feed")
async def test_resync_and_revalidation_distrust_snapshots(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    code = _start(ctx.login).device_code
    _answer(ctx.login, code)
    ctx.login.pending.distrust_all()  # what the feed does on RESYNC
    clock.advance(5)
    assert ctx.login.poll_from_memory(_form(code)) is None
    _answer(ctx.login, code)  # re-read: trusted again
    clock.advance(ctx.login.pending.revalidate_after)
    assert ctx.login.poll_from_memory(_form(code)) is None


def test_restart_keeps_the_interval_but_not_the_last_poll(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    code = _start(ctx.login).device_code
    _answer(ctx.login, code)
    clock.advance(5)
    _answer(ctx.login, code)  # accepted at t0 + 5, in memory only
    clock.advance(1)
    assert _answer(ctx.login, code).interval == 10  # stored, with last_poll_at = t0 + 5
    restarted = LoginService(
        store=ctx.store,
        identity=ctx.identity,
        settings=ctx.settings,
        clock=clock,
        random=SeededRandom(b"restart"),
    )
    clock.advance(3)  # t0 + 9: too soon for the stored poll at t0 + 5 + 10
    assert _answer(restarted, code).interval == 15
    clock.advance(11)  # t0 + 20 = t0 + 5 + 15: accepted, in memory
    assert _answer(restarted, code).error == "authorization_pending"
    second = LoginService(
        store=ctx.store,
        identity=ctx.identity,
        settings=ctx.settings,
        clock=clock,
        random=SeededRandom(b"again"),
    )
    clock.advance(1)
    # The accepted poll at t0 + 20 was never stored: the documented cost of a
    # restart is one early poll accepted; the interval is never lost.
    assert _answer(second, code).error == "authorization_pending"
    clock.advance(1)
    assert _answer(second, code).interval == 20


def _session(n: int, now: float, expires_in: float = 300) -> LoginSession:
    return new_session(
        device_code_hash=hashlib.sha256(b"dc%d" % n).digest(),
        user_code="BDFG-HJKL",
        username="alice",
        client_id="tv",
        scope="",
        device_name="TV",
        initiator_ip="192.0.2.1",
        initiator_user_agent="tv/1",
        now=now,
        expires_in=expires_in,
    )


def test_eviction_bound() -> None:
    polls = PendingPolls(max_entries=3)
    sessions = [_session(n, 0.0) for n in range(5)]
    for s in sessions:
        polls.remember(dataclasses.replace(s, last_poll_at=0.0), epoch=polls.epoch, now=0.0)
    assert len(polls) == 3

    def kept(s: LoginSession) -> bool:
        return polls.merge(s).last_poll_at is not None  # s itself has none

    # Least recently polled go first; what is left is the newest three.
    assert [kept(s) for s in sessions] == [False, False, True, True, True]
    polls.remember(sessions[2], epoch=polls.epoch, now=1.0)  # touch: now the newest
    polls.remember(_session(9, 0.0), epoch=polls.epoch, now=1.0)
    assert [kept(s) for s in sessions] == [False, False, True, False, True]
    # Sessions past their deadline are dropped before the bound is reached.
    short = [_session(20 + n, 0.0, expires_in=10) for n in range(2)]
    small = PendingPolls(max_entries=10)
    for s in short:
        small.remember(s, epoch=small.epoch, now=0.0)
    small.remember(_session(30, 0.0), epoch=small.epoch, now=11.0)
    assert len(small) == 1


def test_snapshot_read_before_a_decision_is_not_trusted() -> None:
    polls = PendingPolls()
    polls._feed_started()
    session = _session(1, 0.0)
    epoch = polls.epoch  # taken before the store read ...
    polls.forget("hwl1.someone-else")  # ... a decision announced meanwhile
    polls.remember(session, epoch=epoch, now=0.0)
    assert not polls.accept(session.device_code_hash, "tv", 5.0)
    polls.remember(session, epoch=polls.epoch, now=5.0)
    assert polls.accept(session.device_code_hash, "tv", 10.0)
    with pytest.raises(ValueError, match="positive"):
        PendingPolls(max_entries=0)
