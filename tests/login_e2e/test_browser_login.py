"""End to end: ``hatchway login`` (device) + Chromium (phone) + ``hatchway serve``.

US 9,635,022 B2 claims 1–3 as the issue's user story: the device sends the
username only, the phone opens ``verification_uri_complete``, types only the
password, approves, and the device is signed in within a moment (push).
"""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hatchway.login.device_client import DeviceLoginClient
from hatchway.login.phone import ApprovalFailed, PhoneClient
from hatchway.server.process import ServerProcess
from tests.login_e2e.conftest import (
    PASSWORD,
    DeviceCli,
    add_client,
    add_user,
    hatchway,
    start_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.chromium]


def pick_code(page: Any, url: str) -> None:
    """Confirm-code: click the code the device shows (the one in its QR link)."""
    if page.locator("#confirm").count():
        code = parse_qs(urlsplit(url).query)["user_code"][0]
        page.click(f'#confirm button[data-code="{code}"]')


def approve_in_browser(page: Any, url: str, password: str) -> str:
    page.goto(url)
    pick_code(page, url)
    page.fill("#password", password)
    page.click("#approve-button")
    page.wait_for_function(
        "() => ['approved', 'failed', 'denied', 'expired'].includes("
        "document.getElementById('result').dataset.status)",
        timeout=20_000,
    )
    return str(page.get_attribute("#result", "data-status"))


def test_login_with_push_then_whoami(server: ServerProcess, page: Any, tmp_path: Path) -> None:
    add_user(server, "alice")
    device = DeviceCli(server, tmp_path, "alice")
    try:
        started = device.next()
        assert started["event"] == "started"
        assert re.fullmatch(r"[B-Z]{4}-[B-Z]{4}", started["user_code"])
        assert started["verification_uri_complete"].endswith(started["user_code"])
        response = page.goto(started["verification_uri_complete"])
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        assert headers["strict-transport-security"].startswith("max-age=")
        text = page.inner_text("#origin")
        assert re.fullmatch(
            r"Sign in as a•••e on a device calling itself “Living-room TV” — "
            r"started \d\d:\d\d UTC from 127\.0\.0\.1",
            text,
        )
        # The registered client is named; its scopes are in plain words.
        assert page.inner_text("#client-name") == "hatchway command line"
        assert page.inner_text("#scopes") == "See your account name"
        # Came by the QR link: first pick the code the device shows.
        assert page.locator("#confirm button.code").count() == 3
        assert not page.is_visible("#password")
        pick_code(page, started["verification_uri_complete"])
        # The page asks for the password only; Approve and Deny look the same.
        assert page.locator("input[type=password]").count() == 1
        assert page.locator("input[name=username]").count() == 0
        approve_box = page.locator("#approve-button").bounding_box()
        deny_box = page.locator("#deny-button").bounding_box()
        assert approve_box["width"] == deny_box["width"]
        assert approve_box["height"] == deny_box["height"]
        clicked = time.monotonic()
        assert approve_in_browser(page, started["verification_uri_complete"], PASSWORD) == (
            "approved"
        )
        done = device.next()
        assert time.monotonic() - clicked < 5  # push, not the 5 s poll interval
        assert done == {"event": "signed_in", "username": "alice", "tokens": str(device.tokens)}
        assert device.wait() == 0
        assert device.tokens.stat().st_mode & 0o777 == 0o600
    finally:
        device.close()
    who = hatchway(server, "whoami", "--tokens", str(device.tokens), "--ca", str(server.ca_file))
    assert who["username"] == "alice" and who["_rc"] == 0

    # The same code again: a clear "used" page, never a second approval.
    page.goto(started["verification_uri_complete"])
    assert page.get_attribute("#status", "data-status") == "unknown"
    assert "unknown, expired or already used" in page.inner_text("main")

    sessions = hatchway(server, "sessions", "list")
    ours = [s for s in sessions["sessions"] if s["username"] == "alice"]
    assert ours and ours[-1]["device_name"] == "Living-room TV"
    assert hatchway(server, "sessions", "revoke", ours[-1]["session"])["revoked"] == 1
    after = hatchway(server, "whoami", "--tokens", str(device.tokens), "--ca", str(server.ca_file))
    assert after["_rc"] != 0


def test_wrong_password_then_right_one(server: ServerProcess, page: Any, tmp_path: Path) -> None:
    add_user(server, "bob")
    device = DeviceCli(server, tmp_path, "bob")
    try:
        url = device.next()["verification_uri_complete"]
        assert approve_in_browser(page, url, "not my password") == "failed"
        assert "not accepted" in page.inner_text("#result")
        assert approve_in_browser(page, url, PASSWORD) == "approved"
        assert device.next()["event"] == "signed_in"
    finally:
        device.close()


def test_deny(server: ServerProcess, page: Any, tmp_path: Path) -> None:
    add_user(server, "carol")
    device = DeviceCli(server, tmp_path, "carol")
    try:
        page.goto(device.next()["verification_uri_complete"])
        page.click("#deny-button")
        assert page.get_attribute("#status", "data-status") == "denied"
        result = device.next()
        assert result == {"error": "the request was denied"}
        assert device.wait() != 0
    finally:
        device.close()
    events = [e for e in _audit(server) if e[1] == "carol"]
    assert ("denied", "carol") in events and ("start", "carol") in events


def _audit(server: ServerProcess) -> list[tuple[str, str | None]]:
    from hatchway.store import Store

    with Store.open(f"sqlite:///{server.data_dir / 'hatchway.sqlite3'}") as store:
        return [(r.event.value, r.username) for r in store.list_audit(200)]


def test_locked_account_keeps_its_devices_then_unlock(tmp_path: Path, page: Any) -> None:
    """A stranger grinds dave's password from this address until new attempts are
    refused; dave's signed-in device keeps working; the operator's unlock lets
    him approve again."""
    server = start_server(tmp_path, HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE="600")
    https = httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca_file)))
    try:
        add_user(server, "dave")
        add_client(server, "tv")
        device = DeviceLoginClient(server.https_url, http=https, client_id="tv")
        phone = PhoneClient(https)
        owner = device.start("dave", device_name="Kitchen")
        request = phone.open(owner.verification_uri_complete)
        assert phone.approve(request, PASSWORD, origin=server.https_url).status == "approved"
        tokens = device.complete(owner)
        # Three free failures, then 2 s, 4 s, 8 s, 16 s of back-off for this address.
        failures, started = 0, device.start("dave", device_name="attacker")
        while failures < 7:
            try:
                request = phone.open(started.verification_uri_complete)
                phone.approve(request, "guess", origin=server.https_url)
            except ApprovalFailed as exc:
                if exc.error == "access_denied":
                    failures += 1
                elif exc.error == "too_many_attempts":
                    time.sleep(1)
                else:  # that session had its five wrong proofs and was denied
                    started = device.start("dave", device_name="attacker")
        assert device.whoami(tokens)[0] == 200  # the lock did not sign dave out
        cli = DeviceCli(server, tmp_path, "dave")
        try:
            url = cli.next()["verification_uri_complete"]
            assert approve_in_browser(page, url, PASSWORD) == "failed"
            assert "try again later" in page.inner_text("#result")
            assert "created_at" in hatchway(server, "users", "unlock", "dave")
            assert approve_in_browser(page, url, PASSWORD) == "approved"
            assert cli.next()["event"] == "signed_in"
        finally:
            cli.close()
        assert device.refresh(tokens).access_token
    finally:
        https.close()
        server.stop()


def test_without_javascript_the_password_is_never_sent(
    server: ServerProcess, no_js_page: Any, tmp_path: Path
) -> None:
    add_user(server, "olga")
    device = DeviceCli(server, tmp_path, "olga")
    try:
        url = device.next()["verification_uri_complete"]
        posts: list[str] = []
        no_js_page.on(
            "request", lambda r: posts.append(r.post_data or "") if r.method == "POST" else None
        )
        no_js_page.goto(url)
        assert "needs JavaScript" in no_js_page.inner_text("#nojs")
        assert not no_js_page.is_visible("#password")
        assert not no_js_page.is_visible("#approve-button")
        no_js_page.click("#deny-button")  # Deny still works without script
        assert no_js_page.get_attribute("#status", "data-status") == "denied"
        assert posts and all("password" not in body for body in posts)
        assert device.next() == {"error": "the request was denied"}
    finally:
        device.close()


def test_expired_code(tmp_path: Path, page: Any) -> None:
    server = start_server(tmp_path, HATCHWAY_LOGIN_EXPIRES_IN="2", HATCHWAY_LOGIN_INTERVAL="1")
    try:
        add_user(server, "erin")
        device = DeviceCli(server, tmp_path, "erin")
        try:
            url = device.next()["verification_uri_complete"]
            assert device.next(timeout=20) == {
                "error": "the code expired before anyone approved it"
            }
            page.goto(url)
            assert page.get_attribute("#status", "data-status") in ("expired", "unknown")
        finally:
            device.close()
        assert ("expired", "erin") in _audit(server)
    finally:
        server.stop()


@pytest.mark.parametrize("poll", [False, True], ids=["push", "poll"])
def test_number_matching(tmp_path: Path, page: Any, poll: bool) -> None:
    server = start_server(tmp_path, HATCHWAY_LOGIN_INTERVAL="1")
    try:
        add_user(server, "frank")
        # The phone-number mode: for a device that can take input.
        add_client(server, "tv-keyboard", "--anti-phishing", "phone-number")
        extra = ["--client-id", "tv-keyboard", *(["--poll"] if poll else [])]
        device = DeviceCli(server, tmp_path, "frank", *extra)
        try:
            url = device.next()["verification_uri_complete"]
            assert approve_in_browser(page, url, PASSWORD) == "approved"
            page.wait_for_selector("#match:not([hidden])")
            number = page.inner_text("#match-number")
            assert re.fullmatch(r"\d\d", number)
            # Approval alone does not complete: the device must give the number.
            assert device.next() == {"attempts_left": None, "event": "match_number_required"}
            wrong = f"{(int(number) + 1) % 100:02d}"
            device.send(wrong)
            assert device.next() == {"attempts_left": 2, "event": "match_number_required"}
            device.send(number)
            assert device.next()["event"] == "signed_in"
        finally:
            device.close()
    finally:
        server.stop()
