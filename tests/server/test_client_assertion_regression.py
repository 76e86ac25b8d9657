"""Found after merging the client registry: the unverified ``client_assertion`` payload
was read with ``json.loads``, so 2,500 nested brackets (small enough for the 8 KiB form
cap) raised RecursionError: an unauthenticated 500 on /oauth/token, /oauth/revoke and
/oauth/introspect. It is read by ``hatchway.strictjson`` now."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.config import Settings
from hatchway.flows.oauth.client_auth import JWT_BEARER_ASSERTION
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from tests.server.harness import AsgiClient, error_trap


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsgiClient]:
    root: Path = tmp_path_factory.mktemp("assertion")
    ctx = ServerContext.create(Settings(data_dir=root / "data", login_scram_iterations=4096))
    try:
        yield AsgiClient(build_https_app(ctx), "https://localhost:8443")
    finally:
        ctx.close()


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
@pytest.mark.parametrize(
    "payload",
    [b"[" * 2500 + b"]" * 2500, b'{"sub":"\\ud800"}', b'{"sub":"a","sub":"b"}', b'{"sub":NaN}'],
)
def test_a_hostile_client_assertion_is_a_4xx(https: AsgiClient, path: str, payload: bytes) -> None:
    header = _b64(b'{"alg":"ES256"}')
    assertion = f"{header}.{_b64(payload)}.{_b64(b'sig')}"
    form = {
        "client_assertion_type": JWT_BEARER_ASSERTION,
        "client_assertion": assertion,
        "grant_type": "refresh_token",
        "refresh_token": "x",
        "token": "x",
    }
    with error_trap() as trap:
        response = https.post(path, data=form)
    assert 400 <= response.status_code < 500
    assert isinstance(response.json()["error"], str)
    assert trap.lines() == []
