"""Every wait of the web app ends (issue 7 item 7), in real Chromium via Playwright.

Observed before the fix: with a slow server the bridge closed the idle session, the
page's next relay() was sent on the closed socket, and the page said "busy" forever.
Now:

* the bridge's idle timeout (``--idle-timeout 1``) while the server is slow (the
  ``/se/api/start`` answer is held 2.5 s by Playwright's router) → a visible
  ``failed`` naming the closed bridge; the button comes back and a retry succeeds;
* a bridge that accepts the page and then never answers → ``failed`` after the relay
  timeout (Playwright's clock runs the page's timers forward: no real 30 s wait);
* a bridge port that accepts TCP but never completes the WebSocket handshake →
  ``failed`` after the open timeout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from hatchway.se.relay import BridgeProcess
from hatchway.server.process import ServerProcess

from .harness import card_secret

pytestmark = [pytest.mark.e2e, pytest.mark.chromium]

FINISHED = "#status[data-state=ok], #status[data-state=failed]"


def finish(page: object, timeout: float = 20_000) -> tuple[str, str]:
    page.wait_for_selector(FINISHED, timeout=timeout)  # type: ignore[attr-defined]
    status = page.locator("#status")  # type: ignore[attr-defined]
    return status.get_attribute("data-state"), status.inner_text()


def test_idle_bridge_close_during_a_slow_server_fails_visibly_and_retry_works(
    browser: object, server: ServerProcess, card_file: Path
) -> None:
    held: list[float] = []

    def slow_start(route: object) -> None:
        held.append(time.monotonic())
        time.sleep(2.5)  # longer than the bridge's idle timeout below
        route.continue_()  # type: ignore[attr-defined]

    with BridgeProcess(card_file, [server.https_url], args=["--idle-timeout", "1"]) as bridge:
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.goto(f"{server.https_url}/se/?bridge={bridge.port}")
            page.route("**/se/api/start", slow_start)
            started = time.monotonic()
            page.click("#start")
            state, text = finish(page)
            assert state == "failed", text
            assert "the bridge closed the connection (1000: idle timeout)" in text
            assert "try again" in text
            assert held and time.monotonic() - started < 15
            assert page.locator("#start").is_enabled()
            # Retry with a prompt server: the same page now provisions.
            page.unroute("**/se/api/start")
            page.click("#start")
            state, text = finish(page, 30_000)
            assert state == "ok", text
        finally:
            page.close()
    assert card_secret(card_file) is not None


@pytest.fixture
def silent_bridge(server: ServerProcess) -> Iterator[int]:
    """A hung bridge: it completes the handshake and says ready, then never answers."""

    def handler(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "ready", "origin": server.https_url, "atr": "3b00"}))
        try:
            for _ in ws:
                pass
        except ConnectionClosed:
            pass

    with serve(handler, "127.0.0.1", 0) as hung:
        thread = threading.Thread(target=hung.serve_forever, daemon=True)
        thread.start()
        try:
            yield hung.socket.getsockname()[1]
        finally:
            hung.shutdown()
            thread.join(10)


def test_a_bridge_that_never_answers_fails_after_the_relay_timeout(
    browser: object, server: ServerProcess, silent_bridge: int
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        page.clock.install()
        page.goto(f"{server.https_url}/se/?bridge={silent_bridge}")
        page.click("#start")
        # (A locator, not wait_for_function: the page's CSP forbids eval.)
        page.locator("#status", has_text="Relaying").wait_for(timeout=20_000)
        page.clock.run_for(31_000)
        state, text = finish(page)
        assert state == "failed", text
        assert "the bridge did not answer within 30 s" in text
        assert page.locator("#start").is_enabled()
    finally:
        page.close()


def test_a_bridge_port_that_never_completes_the_handshake_fails_after_the_open_timeout(
    browser: object, server: ServerProcess
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts TCP (kernel backlog), never speaks HTTP
        port = listener.getsockname()[1]
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.clock.install()
            page.goto(f"{server.https_url}/se/?bridge={port}")
            page.click("#start")
            page.locator("#status", has_text="Connecting").wait_for(timeout=20_000)
            page.clock.run_for(11_000)
            state, text = finish(page)
            assert state == "failed", text
            assert "the bridge did not answer within 10 s" in text
        finally:
            page.close()
