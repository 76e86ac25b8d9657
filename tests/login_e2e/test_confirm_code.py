"""Issue 8 §2 in real Chromium against a real server: confirm-code by QR link, a typed
code, a wrong pick, and withdrawing an approval (and too late to withdraw).

The device side is a plain RFC 8628 client written with httpx here (no hatchway
code, no ``match_number``), so these are also what any unmodified client sees.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hatchway.server.process import ServerProcess
from tests.login_e2e.conftest import PASSWORD, add_user

pytestmark = [pytest.mark.e2e, pytest.mark.chromium]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SETTLED = (
    "() => ['approved', 'failed', 'denied', 'expired', 'wrong_code'].includes("
    "document.getElementById('result').dataset.status)"
)


def _start(https: httpx.Client, username: str) -> dict[str, Any]:
    answer = https.post(
        "/oauth/device_authorization",
        data={"client_id": "tv", "login_hint": username},
    )
    assert answer.status_code == 200, answer.text
    started: dict[str, Any] = answer.json()
    return started


def _poll(https: httpx.Client, started: dict[str, Any]) -> dict[str, Any]:
    answer = https.post(
        "/oauth/token",
        data={"grant_type": DEVICE_GRANT, "device_code": started["device_code"], "client_id": "tv"},
    )
    body: dict[str, Any] = answer.json()
    return body


def _approve(page: Any) -> str:
    page.fill("#password", PASSWORD)
    page.click("#approve-button")
    page.wait_for_function(SETTLED, timeout=20_000)
    return str(page.get_attribute("#result", "data-status"))


def test_qr_link_asks_for_the_devices_code(
    server: ServerProcess, https: httpx.Client, page: Any
) -> None:
    add_user(server, "quinn")
    started = _start(https, "quinn")
    page.goto(started["verification_uri_complete"])
    codes = page.eval_on_selector_all("#confirm button.code", "bs => bs.map(b => b.dataset.code)")
    assert len(codes) == 3 and started["user_code"] in codes
    assert all(len(c) == 9 and c[4] == "-" for c in codes)
    # Nothing to type a password into before the code is confirmed.
    assert not page.is_visible("#password") and not page.is_visible("#approve-button")
    assert page.is_visible("#deny-button")
    page.reload()  # the same three, in the same order: a reload reveals nothing
    assert codes == page.eval_on_selector_all(
        "#confirm button.code", "bs => bs.map(b => b.dataset.code)"
    )
    page.click(f'#confirm button[data-code="{started["user_code"]}"]')
    assert page.is_visible("#password")
    assert _approve(page) == "approved"
    tokens = _poll(https, started)
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "profile"


def test_wrong_pick_cancels_the_request(
    server: ServerProcess, https: httpx.Client, page: Any
) -> None:
    add_user(server, "rita")
    started = _start(https, "rita")
    page.goto(started["verification_uri_complete"])
    decoy = page.eval_on_selector_all(
        "#confirm button.code",
        f"bs => bs.map(b => b.dataset.code).filter(c => c !== '{started['user_code']}')[0]",
    )
    page.click(f'#confirm button[data-code="{decoy}"]')
    assert _approve(page) == "wrong_code"
    assert "not the code your device shows" in page.inner_text("#result")
    assert _poll(https, started)["error"] == "access_denied"
    page.goto(started["verification_uri_complete"])  # the code is spent
    assert page.get_attribute("#status", "data-status") == "unknown"


def test_typed_code_needs_no_pick(server: ServerProcess, https: httpx.Client, page: Any) -> None:
    add_user(server, "sam")
    started = _start(https, "sam")
    page.goto(started["verification_uri"])
    page.fill("#user_code", started["user_code"].lower().replace("-", " "))
    page.click("button[type=submit]")
    page.wait_for_selector("#approve-button")
    assert page.locator("#confirm").count() == 0
    assert _approve(page) == "approved"
    assert "access_token" in _poll(https, started)


def test_withdraw_before_collection_then_too_late_after(
    server: ServerProcess, https: httpx.Client, page: Any
) -> None:
    add_user(server, "tara")
    started = _start(https, "tara")
    page.goto(started["verification_uri_complete"])
    page.click(f'#confirm button[data-code="{started["user_code"]}"]')
    assert _approve(page) == "approved"
    # Deny stays on the page after Approve, as "Withdraw approval".
    assert page.inner_text("#deny-button") == "Withdraw approval"
    page.click("#deny-button")
    assert page.get_attribute("#status", "data-status") == "withdrawn"
    assert _poll(https, started)["error"] == "access_denied"

    # Once the device has collected its tokens, Deny can only say so.
    again = _start(https, "tara")
    page.goto(again["verification_uri_complete"])
    page.click(f'#confirm button[data-code="{again["user_code"]}"]')
    assert _approve(page) == "approved"
    assert "access_token" in _poll(https, again)
    page.click("#deny-button")
    assert page.get_attribute("#status", "data-status") == "too_late"
    assert "already collected" in page.inner_text("main")
