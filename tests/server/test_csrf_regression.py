"""Found by tests/server/test_http_properties.py: a CSRF token with non-ASCII text made
``hmac.compare_digest(str, str)`` raise TypeError, an unauthenticated 500 on
``/login/deny`` (form field) and the SCRAM endpoints (``X-CSRF-Token`` header)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.config import Settings
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from tests.server.harness import AsgiClient, error_trap

COOKIE = {"cookie": "__Host-hw_csrf=abc123"}


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsgiClient]:
    root: Path = tmp_path_factory.mktemp("csrf")
    ctx = ServerContext.create(
        Settings(data_dir=root / "data"), clock=FrozenClock(), random=system_random
    )
    try:
        yield AsgiClient(build_https_app(ctx), "https://localhost:8443")
    finally:
        ctx.close()


def test_deny_with_a_non_ascii_csrf_field_is_a_403_page(https: AsgiClient) -> None:
    with error_trap() as trap:
        response = https.post(
            "/login/deny",
            content=b"csrf=%C3%A9&user_code=ABCD-EFGH",
            headers={**COOKIE, "content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert trap.lines() == []


@pytest.mark.parametrize("path", ["/login/scram/start", "/login/scram/finish"])
def test_scram_with_a_latin1_csrf_header_is_a_json_403(https: AsgiClient, path: str) -> None:
    response = https.post(
        path,
        content=b"{}",
        headers={**COOKIE, "content-type": "application/json", "x-csrf-token": b"\xe9t\xe9"},  # type: ignore[dict-item]
    )
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_request"
