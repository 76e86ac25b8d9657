"""US 10,812,467 B2 claim 1 in real Chromium (Playwright) against real processes.

``hatchway serve`` and ``hatchway se bridge --card`` run as subprocesses; the page
served at ``/se/`` opens the channel and the provisioning job succeeds. A phishing
copy of the page, on another origin that relays the genuine API and certificate,
fails *at the SE* (6A88: identity mismatch) even when the bridge lets that origin
through; with an allow-list of only the genuine origin the bridge itself refuses it.
Navigating to the page never starts provisioning: only a click does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.se.relay import BridgeProcess
from hatchway.server.process import ServerProcess

from .harness import PhishingProxy, card_secret

pytestmark = [pytest.mark.e2e, pytest.mark.chromium]


def run_page(browser: object, url: str) -> tuple[str, str]:
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        page.goto(url)
        page.click("#start")
        page.wait_for_selector("#status[data-state=ok], #status[data-state=failed]", timeout=30_000)
        status = page.locator("#status")
        return status.get_attribute("data-state"), status.inner_text()
    finally:
        page.close()


def test_page_opens_the_channel_and_provisions(
    browser: object, server: ServerProcess, card_file: Path
) -> None:
    with BridgeProcess(card_file, [server.https_url]) as bridge:
        state, text = run_page(browser, f"{server.https_url}/se/?bridge={bridge.port}")
    assert state == "ok", text
    secret = card_secret(card_file)
    assert secret is not None and len(secret) == 32


def test_phishing_copy_fails_at_the_se(
    browser: object, server: ServerProcess, card_file: Path, phishing: PhishingProxy
) -> None:
    # The bridge lets the phishing origin through on purpose: what refuses is the card.
    with BridgeProcess(card_file, [server.https_url, phishing.origin]) as bridge:
        state, text = run_page(browser, f"{phishing.origin}/se/?bridge={bridge.port}")
    assert state == "failed"
    assert "6A88" in text and "REFERENCE_DATA_NOT_FOUND" in text
    assert card_secret(card_file) is None


def test_navigation_alone_never_drives_the_card(
    browser: object, server: ServerProcess, card_file: Path
) -> None:
    """A link or redirect to ``/se/?auto`` (the old auto-start flag) does nothing."""
    with BridgeProcess(card_file, [server.https_url]) as bridge:
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.goto(f"{server.https_url}/se/?auto&bridge={bridge.port}")
            page.wait_for_timeout(1500)
            assert page.locator("#status").get_attribute("data-state") == "idle"
            # A script-dispatched click is not a user gesture either.
            page.evaluate("document.getElementById('start').click()")
            page.wait_for_timeout(1500)
            assert page.locator("#status").get_attribute("data-state") == "idle"
        finally:
            page.close()
    assert card_secret(card_file) is None


def test_allow_list_without_the_phishing_origin_refuses_it(
    browser: object, server: ServerProcess, card_file: Path, phishing: PhishingProxy
) -> None:
    with BridgeProcess(card_file, [server.https_url]) as bridge:
        state, text = run_page(browser, f"{phishing.origin}/se/?bridge={bridge.port}")
    assert state == "failed" and "refused this page" in text
    assert card_secret(card_file) is None
