"""RFC 8628 / RFC 8414 behaviour of the login endpoints against a real server.

No browser: the phone is hatchway's own phone-side client (SCRAM in Python).
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.login.device_client import DeviceLoginClient, LoginFailed
from hatchway.login.phone import ApprovalFailed, PhoneClient
from hatchway.server.process import ServerProcess
from tests.login_e2e.conftest import PASSWORD, add_user, hatchway, start_server

pytestmark = pytest.mark.e2e

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _start(https: httpx.Client, username: str, **extra: str) -> httpx.Response:
    data = {"client_id": "tv", "login_hint": username, "scope": "profile", **extra}
    return https.post("/oauth/device_authorization", data=data)


def test_metadata_names_the_device_flow(https: httpx.Client, server: ServerProcess) -> None:
    meta = https.get("/.well-known/oauth-authorization-server").json()
    assert meta["device_authorization_endpoint"] == server.https_url + "/oauth/device_authorization"
    assert meta["token_endpoint"] == server.https_url + "/oauth/token"
    assert DEVICE_GRANT in meta["grant_types_supported"]
    assert "refresh_token" in meta["grant_types_supported"]


def test_answer_does_not_reveal_whether_the_account_exists(
    https: httpx.Client, server: ServerProcess
) -> None:
    add_user(server, "gina")
    real, fake = _start(https, "gina"), _start(https, "nobody-here")
    assert real.status_code == fake.status_code == 200
    a, b = real.json(), fake.json()
    assert a.keys() == b.keys()
    assert {
        k: v
        for k, v in a.items()
        if k not in ("device_code", "user_code", "verification_uri_complete")
    } == {
        k: v
        for k, v in b.items()
        if k not in ("device_code", "user_code", "verification_uri_complete")
    }
    assert len(a["device_code"]) == len(b["device_code"]) >= 43  # >= 256 bits, base64url
    # The phone gets the same page and the same refusal for both.
    phone = PhoneClient(https)
    for started in (a, b):
        request = phone.open(started["verification_uri_complete"])
        assert "•••" in request.text
        with pytest.raises(ApprovalFailed) as refused:
            phone.approve(request, "wrong password", origin=server.https_url)
        assert refused.value.error == "access_denied"


def test_token_endpoint_errors_and_slow_down(https: httpx.Client) -> None:
    started = _start(https, "nobody").json()
    form = {"grant_type": DEVICE_GRANT, "device_code": started["device_code"], "client_id": "tv"}
    first = https.post("/oauth/token", data=form)
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    second = https.post("/oauth/token", data=form)  # well inside the 5 s interval
    assert second.json() == {"error": "slow_down", "interval": 10}
    wrong_client = https.post("/oauth/token", data={**form, "client_id": "other"})
    assert wrong_client.json()["error"] == "invalid_grant"  # registered, not its code
    # Issue 8 §1: an unregistered client is refused as a client (RFC 6749 §5.2).
    stranger = https.post("/oauth/token", data={**form, "client_id": "stranger"})
    assert (stranger.status_code, stranger.json()["error"]) == (400, "invalid_client")
    basic = https.post("/oauth/token", data=form, auth=("stranger", "guess"))
    assert (basic.status_code, basic.json()["error"]) == (401, "invalid_client")
    assert basic.headers["www-authenticate"].startswith("Basic ")
    scoped = _start(https, "nobody", scope="admin payments:write")
    assert (scoped.status_code, scoped.json()["error"]) == (400, "invalid_scope")
    unknown = https.post("/oauth/token", data={**form, "device_code": "x" * 43})
    assert unknown.json()["error"] == "invalid_grant"
    assert https.post("/oauth/token", data={**form, "grant_type": "password"}).json() == {
        "error": "unsupported_grant_type"
    }


def test_static_assets_and_csrf(https: httpx.Client, server: ServerProcess) -> None:
    for name in ("scram.js", "login-page.js", "saslprep-tables.js"):
        r = https.get(f"/login/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert https.get("/login/static/../__init__.py").status_code == 404
    started = _start(https, "nobody").json()
    page = https.get(started["verification_uri_complete"])
    assert "<script>" not in page.text and "<script type=module" not in page.text.lower()
    start = {"user_code": started["user_code"], "client_first": "n,,n=x,r=abc"}
    no_token = https.post("/login/scram/start", json=start)
    assert no_token.status_code == 403
    bad_origin = https.post(
        "/login/scram/start",
        json=start,
        headers={"origin": "https://evil.example", "x-csrf-token": "x"},
    )
    assert bad_origin.status_code == 403
    deny = https.post("/login/deny", data={"user_code": started["user_code"]})
    assert deny.status_code == 403


def test_refresh_rotation_and_reuse(https: httpx.Client, server: ServerProcess) -> None:
    add_user(server, "hank")
    tokens, device = _signed_in(https, server, "hank")
    status, body = device.whoami(tokens)
    assert status == 200 and body["username"] == "hank"
    rotated = device.refresh(tokens)
    assert rotated.refresh_token != tokens.refresh_token
    # A retry at once (within HATCHWAY_LOGIN_REFRESH_REUSE_INTERVAL, successor
    # unused) gets the same successor back instead of ending the session.
    assert device.refresh(tokens).refresh_token == rotated.refresh_token
    newest = device.refresh(rotated)
    # The old token again, after the device moved on: a copy. Reuse revokes
    # the whole family, so the newest token is dead too.
    with pytest.raises(LoginFailed) as reused:
        device.refresh(tokens)
    assert reused.value.error == "invalid_grant"
    with pytest.raises(LoginFailed):
        device.refresh(newest)
    assert device.whoami(newest)[0] == 401
    assert https.get("/api/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401


def _signed_in(
    https: httpx.Client, server: ServerProcess, username: str, *, push: bool = True
) -> tuple[Any, DeviceLoginClient]:
    device = DeviceLoginClient(server.https_url, http=https, client_id="tv")
    started = device.start(username, device_name="Kiosk")
    phone = PhoneClient(https)
    threading.Timer(
        0.2,
        lambda: phone.approve(
            phone.open(started.verification_uri_complete), PASSWORD, origin=server.https_url
        ),
    ).start()
    return device.complete(started, push=push), device


def test_admin_switch_turns_the_flow_off(https: httpx.Client, server: ServerProcess) -> None:
    assert hatchway(server, "login-flow", "disable")["login_flow"] == "disabled"
    try:
        refused = _start(https, "anyone")
        assert refused.status_code == 503
        assert refused.json()["error"] == "temporarily_unavailable"
    finally:
        assert hatchway(server, "login-flow", "enable")["login_flow"] == "enabled"
    assert _start(https, "anyone").status_code == 200


def test_disabled_account_cannot_finish(https: httpx.Client, server: ServerProcess) -> None:
    add_user(server, "ivan")
    device = DeviceLoginClient(server.https_url, http=https, client_id="tv")
    started = device.start("ivan", device_name="Kiosk")
    phone = PhoneClient(https)
    approval = phone.approve(
        phone.open(started.verification_uri_complete), PASSWORD, origin=server.https_url
    )
    assert approval.status == "approved"
    # Disabled after approval: the check repeated at token issue refuses it.
    assert hatchway(server, "users", "disable", "ivan")["disabled"] is True
    with pytest.raises(LoginFailed) as denied:
        device.complete(started)
    assert denied.value.error == "access_denied"


def test_forwarded_for_cannot_choose_the_client_ip(https: httpx.Client) -> None:
    # The device claims to be on the owner's home network; the page must show
    # the real peer, and the per-IP start limit must count the real peer.
    started = _start(https, "nobody", device_name="TV").json()
    spoof = {"X-Forwarded-For": "192.168.1.20", "Forwarded": "for=192.168.1.20"}
    forged = https.post(
        "/oauth/device_authorization",
        data={"client_id": "tv", "login_hint": "nobody", "device_name": "TV"},
        headers=spoof,
    ).json()
    for answer in (started, forged):
        page = https.get(answer["verification_uri_complete"], headers=spoof).text
        assert "from <bdi>127.0.0.1</bdi>" in page and "192.168.1.20" not in page


def test_page_never_posts_the_password(https: httpx.Client, server: ServerProcess) -> None:
    started = _start(https, "nobody", device_name="VT moor-gniviL\u0007").json()
    page = https.get(started["verification_uri_complete"]).text
    password = re.search(r"<input id=password[^>]*>", page)
    assert password and " name=" not in password.group(0)
    approve = re.search(r"<form id=approve[^>]*>", page)
    assert approve and "action=" not in approve.group(0) and "method=" not in approve.group(0)
    assert '<form id=deny method=post action="/login/deny">' in page
    assert "a device calling itself “<bdi id=device>VT moor-gniviL</bdi>”" in page
    # An old page (or a hand-made form) posting Approve with a password to
    # /login/deny neither denies nor approves: it is told to use JavaScript.
    csrf = re.search(r'data-csrf="([^"]*)"', page)
    assert csrf
    answer = https.post(
        "/login/deny",
        data={"user_code": started["user_code"], "csrf": csrf.group(1), "password": "pencil"},
        headers={"Origin": server.https_url},
    )
    assert answer.status_code == 400 and "needs JavaScript" in answer.text
    assert PhoneClient(https).open(started["verification_uri_complete"]).user_code


def test_user_code_guessing_is_rate_limited(tmp_path: Path) -> None:
    # A fresh client IP is not available on loopback, and exhausting the per-IP
    # bucket of the module's shared server would starve whichever tests the random
    # order runs after this one: so this test has a server of its own.
    own = start_server(tmp_path)
    try:
        context = ssl.create_default_context(cafile=str(own.ca_file))
        with httpx.Client(base_url=own.https_url, verify=context, timeout=30) as https:
            statuses = [
                https.get("/login", params={"user_code": "BCDF-GHJK"}).status_code
                for _ in range(30)
            ]
    finally:
        own.stop()
    assert 429 in statuses
    assert statuses[0] == 404


def test_push_wait_returns_on_timeout(https: httpx.Client) -> None:
    started = _start(https, "nobody").json()
    t = time.monotonic()
    r = https.post(
        "/oauth/device/wait",
        data={"device_code": started["device_code"], "client_id": "tv", "timeout": "0.5"},
    )
    assert r.json() == {"state": "pending", "match_number_required": False}
    assert 0.4 < time.monotonic() - t < 3
