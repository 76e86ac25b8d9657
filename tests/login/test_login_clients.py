"""Registered clients and anti-phishing in the login flow service (issue 8 §1–2).

A real ServerContext on SQLite with an injected clock: invalid_client and
invalid_scope (RFC 6749 §5.2), per-client lifetimes, confirm-code by QR link
versus a typed code, the phone-number mode, and withdrawing an approval.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hatchway.clients import AntiPhishing, AuthMethod, new_client
from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import LoginRefused
from hatchway.flows.login.service import DeviceAuthorization, LoginService
from hatchway.login import ScramClient, SessionState, hash_device_code
from hatchway.login.codes import USER_CODE_ALPHABET, normalize_user_code
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from tests.login.world import GRANT, PASSWORD, login_world

PHONE = "198.51.100.7"


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock, anti_phishing=AntiPhishing.CONFIRM_CODE) as context:
        yield context


@pytest.fixture
def approval(ctx: ServerContext) -> ApprovalService:
    return ApprovalService(ctx.login)


def _start(login: LoginService, **form: str) -> DeviceAuthorization:
    return login.start(
        {"client_id": "tv", "login_hint": "alice", **form}, ip="192.0.2.1", user_agent="tv/1"
    )


def _token(login: LoginService, code: str, client_id: str = "tv") -> dict[str, object]:
    return login.token(
        {"grant_type": GRANT, "device_code": code, "client_id": client_id},
        ip="192.0.2.1",
        user_agent="tv/1",
    )


def _refused(fn: object, *args: object, **kwargs: object) -> LoginRefused:
    with pytest.raises(LoginRefused) as refused:
        fn(*args, **kwargs)  # type: ignore[operator]
    return refused.value


def _approve(
    approval: ApprovalService,
    started: DeviceAuthorization,
    *,
    typed: bool = False,
    picked: str | None = None,
) -> str:
    session = approval.store.get_login_session_by_user_code(started.user_code)
    assert session is not None
    client = ScramClient(session.reference, PASSWORD, random=SeededRandom(b"phone"))
    server_first, exchange = approval.scram_start(
        user_code=started.user_code,
        client_first=client.first(),
        ip=PHONE,
        typed=typed,
        picked=picked,
    )
    result = approval.scram_finish(
        exchange=exchange, client_final=client.final(server_first), ip=PHONE, user_agent="p"
    )
    client.verify(result.server_final)
    return result.status


# --- §1: invalid_client --------------------------------------------------------


def test_unknown_client_is_invalid_client_at_both_endpoints(ctx: ServerContext) -> None:
    refused = _refused(_start, ctx.login, client_id="stranger")
    assert (refused.error, refused.status_hint, refused.challenge) == ("invalid_client", 400, None)
    started = _start(ctx.login)
    assert _refused(_token, ctx.login, started.device_code, "stranger").error == "invalid_client"
    # Names the registry could never hold are simply unknown, not a crash.
    assert _refused(_start, ctx.login, client_id="x" * 256).error == "invalid_client"
    assert _refused(_start, ctx.login, client_id="two words").error == "invalid_client"


def test_disabled_client_is_refused_even_mid_flow(
    ctx: ServerContext, approval: ApprovalService, clock: FrozenClock
) -> None:
    started = _start(ctx.login)
    assert _approve(approval, started, picked=started.user_code) == "approved"
    ctx.store.set_client_enabled("tv", False, now=clock())
    assert _refused(_token, ctx.login, started.device_code).error == "invalid_client"
    assert _refused(_start, ctx.login).error == "invalid_client"
    ctx.store.set_client_enabled("tv", True, now=clock())
    tokens = _token(ctx.login, started.device_code)
    # A client disabled after sign-in cannot refresh either.
    ctx.store.set_client_enabled("tv", False, now=clock())
    refresh = {"grant_type": "refresh_token", "refresh_token": str(tokens["refresh_token"])}
    refused = _refused(
        ctx.login.token, {**refresh, "client_id": "tv"}, ip="192.0.2.1", user_agent="tv/1"
    )
    assert refused.error == "invalid_client"


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_header_authentication_failures_are_401_with_a_challenge(ctx: ServerContext) -> None:
    for header in (_basic("stranger", ""), _basic("tv", "a-secret"), "Basic !!!", "Bearer x"):
        refused = _refused(
            ctx.login.start, {"login_hint": "alice"}, ip="i", user_agent="u", authorization=header
        )
        assert (refused.error, refused.status_hint) == ("invalid_client", 401), header
        assert refused.challenge == 'Basic realm="hatchway"'
    # A public client named in Basic with an empty password is just identified.
    started = ctx.login.start(
        {"login_hint": "alice"}, ip="i", user_agent="u", authorization=_basic("tv", "")
    )
    assert started.user_code
    # Header and body disagreeing about who is asking is refused.
    refused = _refused(
        ctx.login.start,
        {"login_hint": "alice", "client_id": "other"},
        ip="i",
        user_agent="u",
        authorization=_basic("tv", ""),
    )
    assert refused.error == "invalid_client"


def test_confidential_clients_must_prove_their_secret(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    for method in (AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST):
        cid = f"kiosk-{method.value}"
        record, secret = new_client(
            cid,
            "Kiosk",
            now=0,
            random=SeededRandom(cid.encode()),
            auth_method=method,
            anti_phishing=AntiPhishing.NONE,
        )
        assert secret is not None
        ctx.store.add_client(record)
        if method is AuthMethod.CLIENT_SECRET_BASIC:
            good = {"authorization": _basic(cid, secret)}
            bad = {"authorization": _basic(cid, secret[:-1] + "A")}
            form = {"login_hint": "alice"}
            wrong = {**form, "client_id": cid, "client_secret": secret}  # wrong method
        else:
            good, bad = {}, {}
            form = {"login_hint": "alice", "client_id": cid, "client_secret": secret}
            wrong = {**form, "client_secret": secret + "x"}
        assert ctx.login.start(form, ip="i", user_agent="u", **good).user_code
        assert _refused(ctx.login.start, wrong, ip="i", user_agent="u").error == "invalid_client"
        if bad:
            assert _refused(ctx.login.start, form, ip="i", user_agent="u", **bad).status_hint == 401
        # No secret at all: the public path is not a way around authentication.
        assert (
            _refused(
                ctx.login.start, {"login_hint": "alice", "client_id": cid}, ip="i", user_agent="u"
            ).error
            == "invalid_client"
        )


# --- §1: scopes ------------------------------------------------------------------


def test_scopes_are_limited_to_the_registered_ones(ctx: ServerContext) -> None:
    for asked in ("admin payments:write", "profile admin", "profile\tadmin", 'bad"scope'):
        refused = _refused(_start, ctx.login, scope=asked)
        assert refused.error == "invalid_scope", asked
    for asked, granted in [
        ("", "profile offline_access"),
        ("profile", "profile"),
        ("offline_access profile profile", "offline_access profile"),
    ]:
        started = _start(ctx.login, scope=asked)
        session = ctx.store.get_login_session_by_user_code(started.user_code)
        assert session is not None and session.scope == granted


def test_page_names_the_registered_client_and_its_scopes(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    from hatchway.server.login_pages import approval_page

    started = _start(ctx.login, scope="profile offline_access", device_name="Totally Legit Bank")
    view = approval.page(started.user_code, ip=PHONE)
    assert view.client is not None and view.client.name == "Living-room TV app"
    html = approval_page(view, "csrf")
    assert "<bdi id=client-name>Living-room TV app</bdi>" in html
    assert "See your account name" in html
    assert "Stay signed in on the device until you sign it out" in html
    assert "calling itself" in html  # the device's own name is still labelled as a claim


def test_client_lifetimes_apply(ctx: ServerContext, approval: ApprovalService) -> None:
    tv = ctx.store.get_client("tv")
    assert tv is not None
    ctx.store.update_client(replace(tv, access_ttl=60, refresh_ttl=120), now=1.0)
    started = _start(ctx.login)
    _approve(approval, started, picked=started.user_code)
    tokens = _token(ctx.login, started.device_code)
    assert tokens["expires_in"] == 60
    claims = ctx.login.verify_access_token(str(tokens["access_token"]))
    assert claims["exp"] - claims["iat"] == 60
    refresh = ctx.store.get_refresh_token(
        hashlib.sha256(str(tokens["refresh_token"]).encode()).digest()
    )
    assert refresh is not None and refresh.expires_at - refresh.created_at == 120


# --- §2: confirm-code --------------------------------------------------------------


def test_qr_arrival_must_pick_the_devices_code(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    started = _start(ctx.login)
    first = approval.page(started.user_code, ip=PHONE)
    again = approval.page(started.user_code, ip=PHONE)
    assert first.session is not None and again.session is not None
    choices = first.session.code_choices
    assert choices is not None and len(choices) == 3 and len(set(choices)) == 3
    assert choices == again.session.code_choices  # stable: reloads reveal nothing
    assert started.user_code in choices
    for code in choices:  # decoys look exactly like real codes
        assert normalize_user_code(code) == code
        assert set(code.replace("-", "")) <= set(USER_CODE_ALPHABET)
    # The right pick (typed in any case or spacing) lets the approval through.
    picked = started.user_code.lower().replace("-", " ")
    assert _approve(approval, started, picked=picked) == "approved"
    assert "access_token" in _token(ctx.login, started.device_code)


@pytest.mark.parametrize("pick", ["decoy", None, "not a code", "BCDF"])
def test_wrong_or_missing_pick_cancels_the_request(
    ctx: ServerContext, approval: ApprovalService, pick: str | None
) -> None:
    started = _start(ctx.login)
    session = ctx.store.get_login_session_by_user_code(started.user_code)
    assert session is not None and session.code_choices is not None
    if pick == "decoy":
        pick = next(c for c in session.code_choices if c != started.user_code)
    refused = _refused(_approve, approval, started, picked=pick)
    assert (refused.error, refused.status_hint) == ("wrong_code", 403)
    stored = ctx.store.get_login_session_by_device_code_hash(hash_device_code(started.device_code))
    assert stored is not None and stored.state is SessionState.DENIED
    assert stored.confirm_failures == 1
    assert _refused(_token, ctx.login, started.device_code).error == "access_denied"
    # Even the right code and password cannot revive it.
    revived = _refused(
        approval.scram_start,
        user_code=started.user_code,
        client_first="n,,n=x,r=abc",
        ip=PHONE,
        picked=started.user_code,
    )
    assert revived.status_hint == 404
    events = [r.event.value for r in ctx.store.list_audit(5)]
    assert events[:2] == ["denied", "code_pick_failed"]


def test_typed_code_needs_no_pick(ctx: ServerContext, approval: ApprovalService) -> None:
    started = _start(ctx.login)
    assert _approve(approval, started, typed=True) == "approved"
    assert "access_token" in _token(ctx.login, started.device_code)


def test_none_mode_asks_nothing(tmp_path: Path, clock: FrozenClock) -> None:
    with login_world(tmp_path, clock, anti_phishing=AntiPhishing.NONE) as ctx:
        approval = ApprovalService(ctx.login)
        started = _start(ctx.login)
        session = ctx.store.get_login_session_by_user_code(started.user_code)
        assert session is not None and session.code_choices is None
        assert session.match_number is None
        assert _approve(approval, started) == "approved"


# --- §2: withdrawing an approval ---------------------------------------------------


def test_deny_after_approve_withdraws_until_collected(
    ctx: ServerContext, approval: ApprovalService
) -> None:
    started = _start(ctx.login)
    assert _approve(approval, started, typed=True) == "approved"
    assert approval.page(started.user_code, ip=PHONE).status == "approved"
    assert approval.deny(user_code=started.user_code, ip=PHONE, user_agent="p") == "withdrawn"
    refused = _refused(_token, ctx.login, started.device_code)
    assert refused.error == "access_denied"
    events = [r.event.value for r in ctx.store.list_audit(5)]
    assert events[0] == "withdrawn"


def test_deny_after_collection_says_too_late(ctx: ServerContext, approval: ApprovalService) -> None:
    started = _start(ctx.login)
    _approve(approval, started, typed=True)
    ref = approval.page(started.user_code, ip=PHONE).session
    assert ref is not None
    assert "access_token" in _token(ctx.login, started.device_code)
    late = _refused(
        approval.deny,
        user_code=started.user_code,
        ip=PHONE,
        user_agent="p",
        session_ref=ref.reference,
    )
    assert (late.error, late.status_hint) == ("too_late", 409)
    # Without the page's session reference it is just an unknown code (codes are reused).
    plain = _refused(approval.deny, user_code=started.user_code, ip=PHONE, user_agent="p")
    assert plain.status_hint == 404
    # A forged reference gets no more than that.
    forged = _refused(
        approval.deny,
        user_code=started.user_code,
        ip=PHONE,
        user_agent="p",
        session_ref=ref.reference[:-1] + "x",
    )
    assert forged.status_hint == 404
