"""Regression tests for the cross-device login security review, written as the
attacks they stop: each test plays the attacker against the real flow services
(flows/login*.py) over a real SQLite store, with an injected clock."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from hatchway.config import Settings
from hatchway.errors import InvalidMessage
from hatchway.flows.login.approval import ApprovalService, started_at_text
from hatchway.flows.login.common import SCRAM_ITERATIONS_FLAG, LoginRefused
from hatchway.flows.login.guard import ACCOUNT_IP_POLICY, ACCOUNT_POLICY, SESSION_MAX_FAILURES
from hatchway.flows.login.service import DeviceAuthorization
from hatchway.login import ScramClient
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from hatchway.server.login_pages import approval_page
from hatchway.server.run import proxy_options
from tests.login.world import GRANT, PASSWORD, login_world

ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock, HATCHWAY_LOGIN_START_PER_MINUTE="600") as context:
        # Decoys for unknown names then use the same count as alice's verifier.
        context.store.set_flag(SCRAM_ITERATIONS_FLAG, "4096", now=0)
        yield context


@pytest.fixture
def approval(ctx: ServerContext) -> ApprovalService:
    return ApprovalService(ctx.login)


def start(ctx: ServerContext, user: str = "alice", name: str = "TV") -> DeviceAuthorization:
    return ctx.login.start(
        {"client_id": "tv", "login_hint": user, "device_name": name},
        ip="192.0.2.1",
        user_agent="tv/1",
    )


def token(ctx: ServerContext, code: str, **extra: str) -> dict[str, object]:
    form = {"grant_type": GRANT, "device_code": code, "client_id": "tv", **extra}
    return ctx.login.token(form, ip="192.0.2.1", user_agent="tv/1")


def exchange(
    approval: ApprovalService, started: DeviceAuthorization, password: str, ip: str
) -> tuple[str, str]:
    """scram/start as a phone would: returns (exchange token, client-final)."""
    session = approval.store.get_login_session_by_user_code(started.user_code)
    if session is None:  # denied or expired: what the server would answer
        raise LoginRefused("invalid_request", status=404)
    client = ScramClient(session.reference, password, random=SeededRandom(b"phone"))
    server_first, sealed = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip=ip
    )
    return sealed, client.final(server_first)


def prove(approval: ApprovalService, started: DeviceAuthorization, password: str, ip: str) -> str:
    sealed, final = exchange(approval, started, password, ip)
    return approval.scram_finish(exchange=sealed, client_final=final, ip=ip, user_agent="p").status


def refused(fn: object, *args: object, **kwargs: object) -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        fn(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def grind(ctx: ServerContext, approval: ApprovalService, clock: FrozenClock, ip: str) -> int:
    """Wrong proofs for alice from ``ip``, waiting out each back-off, a fresh
    session whenever one is used up, until the audit log says "locked".
    Returns the number of wrong proofs it took."""
    started = start(ctx)
    for n in range(1, 100):
        try:
            prove(approval, started, "wrong", ip)
        except LoginRefused as exc:
            if exc.status_hint == 404:  # session denied after N wrong proofs
                started = start(ctx)
            elif exc.error == "too_many_attempts":
                clock.advance(exc.retry_after or 1)
            elif "locked" in [r.event.value for r in ctx.store.list_audit(3)]:
                return n
    raise AssertionError("never locked")


# --- S1: a stranger's wrong passwords -------------------------------------------


def test_lockout_never_signs_out_existing_devices(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    owner = start(ctx)
    assert prove(approval, owner, PASSWORD, OWNER) == "approved"
    tokens = token(ctx, owner.device_code)
    assert grind(ctx, approval, clock, ATTACKER)
    # New attempts are refused, even with the right password...
    late = start(ctx)
    assert refused(prove, approval, late, PASSWORD, ATTACKER).error == "too_many_attempts"
    # ...but the devices already signed in keep working, refresh included.
    assert ctx.login.verify_access_token(str(tokens["access_token"]))["sub"] == "alice"
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refreshed = ctx.login.token({**form, "client_id": "tv"}, ip="x", user_agent="x")  # type: ignore[dict-item]
    assert refreshed["access_token"]


def test_only_disabling_the_account_ends_sessions(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    owner = start(ctx)
    assert prove(approval, owner, PASSWORD, OWNER) == "approved"
    tokens = token(ctx, owner.device_code)
    ctx.store.set_user_disabled("alice", True, now=clock())
    with pytest.raises(InvalidMessage):
        ctx.login.verify_access_token(str(tokens["access_token"]))


def test_lock_expires_and_the_count_starts_again(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    grind(ctx, approval, clock, ATTACKER)
    assert ACCOUNT_POLICY.lockout_duration is not None
    clock.advance(ACCOUNT_IP_POLICY.lockout_duration or 0)
    # One wrong proof an hour later is the first of a new count, not a new lock.
    assert refused(prove, approval, start(ctx), "wrong", ATTACKER).error == "access_denied"
    assert prove(approval, start(ctx), PASSWORD, ATTACKER) == "approved"


def test_back_off_is_capped(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    waits: list[int] = []
    started = start(ctx)
    for _ in range(40):
        try:
            prove(approval, started, "wrong", f"192.0.2.{len(waits) + 10}")
        except LoginRefused as exc:
            if exc.status_hint == 404:
                started = start(ctx)
            elif exc.error == "too_many_attempts":
                waits.append(exc.retry_after or 0)
                clock.advance(exc.retry_after or 1)
    assert waits and max(waits) <= ACCOUNT_POLICY.lockout_duration  # type: ignore[operator]


def test_a_strangers_failures_do_not_block_the_owner_at_once(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    attacker = start(ctx)
    for _ in range(ACCOUNT_IP_POLICY.free_failures + 1):
        refused(prove, approval, attacker, "wrong", ATTACKER)
    # The attacker's address now waits; the owner, elsewhere, does not.
    assert refused(prove, approval, attacker, "wrong", ATTACKER).error == "too_many_attempts"
    assert prove(approval, start(ctx), PASSWORD, OWNER) == "approved"


def test_one_session_cannot_be_used_to_grind(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    attacker = start(ctx)
    for n in range(SESSION_MAX_FAILURES):
        # A new address each time, and few enough for the account's free
        # failures: only the per-session cap is left to stop this.
        assert refused(prove, approval, attacker, f"guess{n}", f"10.0.0.{n}").error == (
            "access_denied"
        )
    assert refused(prove, approval, attacker, PASSWORD, "10.0.1.1").status_hint == 404
    assert refused(token, ctx, attacker.device_code).error == "access_denied"


# --- S9: one scram/start, many finishes ------------------------------------------


def test_exchange_token_is_single_use(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    started = start(ctx)
    sealed, final = exchange(approval, started, "wrong", ATTACKER)
    refused(approval.scram_finish, exchange=sealed, client_final=final, ip=ATTACKER, user_agent="a")
    clock.advance(60)
    again = refused(
        approval.scram_finish, exchange=sealed, client_final=final, ip=ATTACKER, user_agent="a"
    )
    assert (again.error, again.description) == ("invalid_request", "exchange expired; start again")
    user_failures = [r for r in ctx.store.list_audit(20) if r.event.value == "password_failed"]
    assert len(user_failures) == 1


def test_finish_is_rate_limited_per_ip_and_per_code(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    started = start(ctx)
    answers = set()
    for _ in range(20):
        try:
            approval.scram_finish(exchange="x.y", client_final="c", ip=ATTACKER, user_agent="a")
        except LoginRefused as exc:
            answers.add(exc.status_hint)
    assert 429 not in answers  # 600/min configured: the per-IP bucket is large here
    small = ApprovalService(ctx.login)
    small.finish_limiter.policy = small.finish_limiter.policy.__class__(3, 1 / 60)
    for _ in range(3):
        refused(small.scram_finish, exchange="x.y", client_final="c", ip=ATTACKER, user_agent="a")
    limited = refused(
        small.scram_finish, exchange="x.y", client_final="c", ip=ATTACKER, user_agent="a"
    )
    assert limited.status_hint == 429
    # Per code: replaying one sealed exchange from many addresses runs the
    # code's bucket (10) dry; the single-use check refuses the replays meanwhile.
    sealed, final = exchange(approval, started, "wrong", "10.1.0.1")
    answers_by_try = [
        refused(
            approval.scram_finish,
            exchange=sealed,
            client_final=final,
            ip=f"10.1.1.{n}",
            user_agent="a",
        )
        for n in range(11)
    ]
    assert answers_by_try[0].error == "access_denied"
    assert {a.description for a in answers_by_try[1:10]} == {"exchange expired; start again"}
    assert answers_by_try[10].status_hint == 429


# --- S4 / S10: user-code guessing ----------------------------------------------


def test_code_guessing_pays_before_the_lookup_on_every_endpoint(
    tmp_path: Path, clock: FrozenClock
) -> None:
    with login_world(tmp_path, clock, HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE="10") as ctx:
        settings = ctx.settings
        approval = ApprovalService(ctx.login)
        live = start(ctx)
        guesses = [f"BBBB-BB{a}{b}" for a in "BCDFG" for b in "BCDFGHJKLMNPQRST"]
        for endpoint in ("start", "deny"):
            ip = f"203.0.113.{len(endpoint)}"
            answers = []
            for code in guesses:
                if endpoint == "start":
                    call = refused(
                        approval.scram_start, user_code=code, client_first="n,,n=x,r=a", ip=ip
                    )
                else:
                    call = refused(approval.deny, user_code=code, ip=ip, user_agent="x")
                answers.append(call.status_hint)
            assert answers.count(404) == 2 * settings.login_attempts_per_minute
            assert set(answers) == {404, 429}
            # Out of budget: the live code is refused like any other guess.
            if endpoint == "start":
                hit = refused(
                    approval.scram_start, user_code=live.user_code, client_first="n,,", ip=ip
                )
            else:
                hit = refused(approval.deny, user_code=live.user_code, ip=ip, user_agent="x")
            assert hit.status_hint == 429
        assert approval.page(live.user_code, ip=OWNER).status == "pending"


def test_unknown_and_ended_codes_answer_alike(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    ended = start(ctx)
    approval.deny(user_code=ended.user_code, ip=OWNER, user_agent="p")
    answers = {
        (e.status_hint, e.error, e.description)
        for e in (
            refused(approval.scram_start, user_code=c, client_first="n,,n=x,r=a", ip=OWNER)
            for c in ("BCDF-GHJK", ended.user_code, "not a code")
        )
    }
    assert len(answers) == 1


def test_reading_the_code_cannot_lock_its_owner_out(tmp_path: Path, clock: FrozenClock) -> None:
    with login_world(tmp_path, clock, HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE="10") as ctx:
        approval = ApprovalService(ctx.login)
        started = start(ctx)
        for n in range(50):  # a shoulder-surfer reloads the page from many addresses
            assert approval.page(started.user_code, ip=f"10.2.0.{n}").status == "pending"
        assert approval.page(started.user_code, ip=OWNER).status == "pending"
        assert prove(approval, started, PASSWORD, OWNER) == "approved"


# --- S2 / S3: account enumeration -------------------------------------------------


def _salt_and_iterations(approval: ApprovalService, ctx: ServerContext, user: str) -> str:
    started = start(ctx, user)
    session = ctx.store.get_login_session_by_user_code(started.user_code)
    assert session is not None
    client = ScramClient(session.reference, "x", random=SeededRandom())
    server_first, _ = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip=OWNER
    )
    return server_first.split(",", 1)[1]  # s=…,i=…


def _full_width(name: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) for ch in name)


@pytest.mark.parametrize("name", ["alice", "mallory"])
def test_spellings_of_a_name_get_one_salt_real_or_not(
    ctx: ServerContext, approval: ApprovalService, name: str
) -> None:
    variants = {
        _salt_and_iterations(approval, ctx, n) for n in (name, name.upper(), _full_width(name))
    }
    assert len(variants) == 1


def test_decoys_use_the_iteration_count_of_real_accounts(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    real = _salt_and_iterations(approval, ctx, "alice").split(",")[1]
    fake = _salt_and_iterations(approval, ctx, "nobody").split(",")[1]
    assert real == fake == "i=4096"
    # Neither the flag nor the setting (600000) decides: the accounts do (issue 8 §5.5).
    ctx.store.set_flag(SCRAM_ITERATIONS_FLAG, "", now=0)
    assert Settings().login_scram_iterations != 4096
    assert _salt_and_iterations(approval, ctx, "nobody").endswith("i=4096")


def test_wrong_proof_does_the_same_store_work_for_real_and_unknown(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        statements.append(re.sub(r"\s+", " ", sql))

    traces = []
    for user in ("alice", "nobody"):
        started = start(ctx, user)
        sealed, final = exchange(approval, started, "wrong", f"192.0.2.{len(traces) + 50}")
        statements.clear()
        event.listen(ctx.store.engine, "before_cursor_execute", record)
        try:
            refused(
                approval.scram_finish, exchange=sealed, client_final=final, ip="x", user_agent="y"
            )
        finally:
            event.remove(ctx.store.engine, "before_cursor_execute", record)
        traces.append(list(statements))
    assert traces[0] == traces[1]
    assert not any(s.startswith("UPDATE users") for s in traces[0])


# --- S6: the device's name is the device's claim ---------------------------------


def test_device_name_cannot_rewrite_the_approval_page(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    # Bidi controls are refused outright (issue 8 §5.6); other invisibles are dropped.
    with pytest.raises(LoginRefused):
        start(ctx, name="TV\u202e\u2066 verified by hatchway")
    started = start(ctx, name="TV verified by \u200bhatchway\u0007\n\n" + "x" * 80)
    view = approval.page(started.user_code, ip=OWNER)
    assert view.session is not None
    name = view.session.device_name
    assert len(name) <= 40 and name.startswith("TV verified by hatchway x")
    assert not re.search(r"[\u0000-\u001f\u200b-\u200f\u202a-\u202e\u2066-\u2069]", name)
    html = approval_page(view, "csrf")
    assert "a device calling itself" in html
    assert started_at_text(view.session).endswith(" UTC")


# --- other findings ----------------------------------------------------------------


@pytest.mark.parametrize("typed", ["ALICE", "\uff41\uff4c\uff49\uff43\uff45"])
def test_subject_is_the_stored_name_not_the_hint(
    ctx: ServerContext, approval: ApprovalService, typed: str
) -> None:
    started = start(ctx, typed)
    assert prove(approval, started, PASSWORD, OWNER) == "approved"
    claims = ctx.login.verify_access_token(str(token(ctx, started.device_code)["access_token"]))
    assert claims["sub"] == "alice"


def test_approval_does_not_undo_a_concurrent_slow_down(
    ctx: ServerContext,
    approval: ApprovalService,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = start(ctx)
    refused(token, ctx, started.device_code)  # first poll accepted
    real_success = ctx.store.record_password_success

    def poll_meanwhile(username: str, *, now: float) -> object:
        # The device polls too fast while the phone's proof is being checked.
        assert refused(token, ctx, started.device_code).error == "slow_down"
        return real_success(username, now=now)

    monkeypatch.setattr(ctx.store, "record_password_success", poll_meanwhile)
    assert prove(approval, started, PASSWORD, OWNER) == "approved"
    stored = ctx.store.get_login_session_by_user_code(started.user_code)
    assert stored is not None and stored.interval == 10


def test_expiry_is_audited_even_if_nobody_polls(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    start(ctx, "alice")
    clock.advance(ctx.settings.login_expires_in + 31)
    approval.page("BCDF-GHJK", ip=OWNER)  # any login endpoint, any code
    assert "expired" in [r.event.value for r in ctx.store.list_audit(5)]


def test_confirm_code_is_the_default_anti_phishing() -> None:
    """Issue 8 §2: the default works with unmodified RFC 8628 clients."""
    from hatchway.clients import CLI_CLIENT_ID, AntiPhishing, ClientRecord
    from hatchway.flows.clients import CLI_CLIENT

    assert ClientRecord(client_id="x", name="X").anti_phishing is AntiPhishing.CONFIRM_CODE
    assert CLI_CLIENT.client_id == CLI_CLIENT_ID
    assert CLI_CLIENT.anti_phishing is AntiPhishing.CONFIRM_CODE


def test_forwarded_headers_are_ignored_unless_a_proxy_is_trusted() -> None:
    assert proxy_options(Settings()) == {"proxy_headers": False}
    trusted = proxy_options(Settings(trusted_proxies="10.0.0.5, 10.0.0.6"))
    assert trusted == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5", "10.0.0.6"]}
