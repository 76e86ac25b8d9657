"""Issue 8 §5 defects at the HTTP adapter, attacked in process (ASGI, no sockets).

* 5.3 ``/oauth/device/wait`` with a non-finite or negative ``timeout``;
* 5.4 deeply nested JSON to ``/login/scram/start``;
* 5.7 ``GET /login`` answering 429 without ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.clients import AntiPhishing, new_client
from hatchway.config import Settings
from hatchway.runtime import SeededRandom
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app

BASE = "https://localhost:8443"


class Https:
    """The HTTPS app in process, with a cookie jar (the page's CSRF cookie is ``__Host-``)."""

    def __init__(self, ctx: ServerContext, ip: str = "127.0.0.1") -> None:
        self.app = build_https_app(ctx)
        self.cookies = httpx.Cookies()
        self.ip = ip

    async def arequest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=(self.ip, 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE, cookies=self.cookies
        ) as client:
            response = await client.request(method, path, **kwargs)
            await response.aread()
            self.cookies.update(client.cookies)
            return response

    def request(self, method: str, path: str, *, within: float = 10.0, **kw: Any) -> httpx.Response:
        """Fails (TimeoutError) if the server holds the request longer than ``within``."""
        return asyncio.run(asyncio.wait_for(self.arequest(method, path, **kw), within))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerContext]:
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("issue8")),
        login_attempts_per_minute=2,
        login_start_per_minute=600,
    )
    context = ServerContext.create(settings)
    tv, _ = new_client(
        "tv", "TV", now=0, random=SeededRandom(b"tv"), anti_phishing=AntiPhishing.NONE
    )
    context.store.add_client(tv)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def https(ctx: ServerContext) -> Https:
    return Https(ctx)


def start(https: Https, username: str = "alice", **extra: str) -> dict[str, Any]:
    r = https.request(
        "POST",
        "/oauth/device_authorization",
        data={"client_id": "tv", "login_hint": username, **extra},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def page_csrf(https: Https, user_code: str, ip_headers: dict[str, str] | None = None) -> str:
    r = https.request("GET", f"/login?user_code={user_code}", headers=ip_headers or {})
    assert r.status_code == 200, r.text
    return r.text.split('data-csrf="', 1)[1].split('"', 1)[0]


# --- 5.3 -----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["nan", "NaN", "inf", "-inf", "-1", "1e999", "x"])
def test_wait_refuses_a_timeout_that_is_not_a_finite_non_negative_number(
    https: Https, timeout: str
) -> None:
    """Before: NaN slipped through min/max and the request hung past the 30 s cap."""
    started = start(https)
    r = https.request(
        "POST",
        "/oauth/device/wait",
        data={"device_code": started["device_code"], "client_id": "tv", "timeout": timeout},
        within=5.0,
    )
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "malformed timeout"}


def test_wait_caps_a_huge_finite_timeout_and_answers_zero_at_once(https: Https) -> None:
    started = start(https)
    form = {"device_code": started["device_code"], "client_id": "tv"}
    r = https.request("POST", "/oauth/device/wait", data={**form, "timeout": "0"}, within=5.0)
    assert r.json()["state"] == "pending"
    from hatchway.server.login_routes import MAX_WAIT, _wait_timeout

    assert _wait_timeout("1e300") == MAX_WAIT
    assert _wait_timeout(None) == 25.0


# --- 5.4 -----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[" * 5000, b'{"a":' * 2000, b"[" * 9 + b"]" * 9])
def test_deep_json_to_scram_start_is_a_400_not_a_500(https: Https, body: bytes) -> None:
    started = start(https)
    csrf = page_csrf(https, started["user_code"])
    r = https.request(
        "POST",
        "/login/scram/start",
        content=body,
        headers={"content-type": "application/json", "x-csrf-token": csrf},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def test_json_depth_ignores_brackets_inside_strings() -> None:
    from hatchway.server.login_routes import _json_depth

    assert _json_depth(b'{"user_code": "[[[[[[[[[[[[", "x": "\\"[[[["}') == 1
    assert _json_depth(b'{"a": [{"b": []}]}') == 4


# --- 5.7 -----------------------------------------------------------------------


def test_a_limited_login_page_says_when_to_retry(ctx: ServerContext) -> None:
    """2 lookups a minute (a burst of 4), then 429 *with* Retry-After (RFC 6585 §4)."""
    https = Https(ctx, ip="192.0.2.57")
    headers = {"x-forwarded-for": "192.0.2.58"}  # no trusted proxies: the TCP peer counts
    answers = [
        https.request("GET", "/login?user_code=BCDF-GHJK", headers=headers) for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [404, 404, 404, 404, 429]
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60


# --- 5.8 -----------------------------------------------------------------------


def _add_user(ctx: ServerContext, username: str, password: str) -> None:
    from hatchway.login import make_verifier
    from hatchway.runtime import system_random

    verifier = make_verifier(password, random=system_random, iterations=4096)
    ctx.store.add_user(username, verifier, now=ctx.login.clock())


def _scram_start(browser: Https, user_code: str, password: str) -> tuple[str, str, Any]:
    from hatchway.login import ScramClient
    from hatchway.runtime import system_random

    page = browser.request("GET", f"/login?user_code={user_code}")
    csrf = page.text.split('data-csrf="', 1)[1].split('"', 1)[0]
    ref = page.text.split('data-session-ref="', 1)[1].split('"', 1)[0]
    scram = ScramClient(ref, password, random=system_random)
    started = browser.request(
        "POST",
        "/login/scram/start",
        json={"user_code": user_code, "client_first": scram.first()},
        headers={"x-csrf-token": csrf},
    ).json()
    return started["exchange"], scram.final(started["server_first"]), csrf


def test_an_exchange_cannot_be_finished_in_another_browser(ctx: ServerContext) -> None:
    """Browser 1 starts the proof; browser 2 (its own cookie and token) cannot finish it."""
    _add_user(ctx, "frank", "correct horse")
    device = Https(ctx, ip="192.0.2.80")
    started = start(device, "frank")
    first, second = Https(ctx, ip="192.0.2.81"), Https(ctx, ip="192.0.2.82")
    exchange, final, _ = _scram_start(first, started["user_code"], "correct horse")
    page = second.request("GET", f"/login?user_code={started['user_code']}")
    csrf_2 = page.text.split('data-csrf="', 1)[1].split('"', 1)[0]
    stolen = second.request(
        "POST",
        "/login/scram/finish",
        json={"exchange": exchange, "client_final": final},
        headers={"x-csrf-token": csrf_2},
    )
    assert stolen.status_code == 400
    assert stolen.json()["error_description"] == "exchange expired; start again"
    # The attempt neither spent the exchange nor decided anything: browser 1 finishes.
    page_1 = first.request("GET", f"/login?user_code={started['user_code']}")
    csrf_1 = page_1.text.split('data-csrf="', 1)[1].split('"', 1)[0]
    done = first.request(
        "POST",
        "/login/scram/finish",
        json={"exchange": exchange, "client_final": final},
        headers={"x-csrf-token": csrf_1},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "approved"


def test_the_exchange_stores_a_hash_of_the_cookie_not_the_cookie(ctx: ServerContext) -> None:
    import base64
    import json

    device = Https(ctx, ip="192.0.2.90")
    started = start(device, "nobody-here")
    browser = Https(ctx, ip="192.0.2.91")
    exchange, _, _ = _scram_start(browser, started["user_code"], "x")
    body = exchange.split(".", 1)[0]
    sealed = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    cookie = browser.cookies.get("__Host-hw_csrf")
    assert cookie and cookie not in exchange
    assert len(base64.urlsafe_b64decode(sealed["br"] + "=")) == 32


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(_JSON, st.booleans())
def test_json_depth_is_the_real_nesting_depth(value: object, ascii_only: bool) -> None:
    """Property: the byte scanner agrees with the parsed value, whatever strings hold."""
    import json

    from hatchway.server.login_routes import _json_depth

    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _json_depth(body) == _depth(value)
