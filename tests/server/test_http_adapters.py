"""The HTTP adapters, attacked: the plain listener answers every bad input with the one
uniform 400, never a 500; the HTTPS listener's enrolment errors are clear JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.config import Settings
from hatchway.errors import InvalidMessage
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from hatchway.server.plain_app import UNIFORM_ERROR, build_plain_app
from tests.flows.conftest import enrol

FRESH: list[bytes] = []


class AsgiClient:
    """A synchronous client that calls an ASGI app in process (no sockets)."""

    def __init__(
        self,
        app: Any,
        base_url: str = "http://localhost:8080",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.base_url = base_url
        self.headers = headers or {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url=self.base_url, headers=self.headers
            ) as client:
                response = await client.request(method, path, **kwargs)
                await response.aread()
                return response

        return asyncio.run(go())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerContext, bytes]]:
    root: Path = tmp_path_factory.mktemp("http")
    clock = FrozenClock()
    ctx = ServerContext.create(Settings(data_dir=root / "data"), clock=clock, random=system_random)
    device = enrol(ctx, "meter-1", root / "meter-1.json", clock)
    device.send({"kwh": 1})
    token = device._transport.sent[-1]  # type: ignore[attr-defined]
    # A second, never-delivered token for tests that must see it accepted.
    held: list[bytes] = []
    device._transport = lambda url, t: (held.append(t), b"")[1]
    with pytest.raises(InvalidMessage):
        device.send({"kwh": 2})  # the empty "reply" does not open; the token is held
    FRESH.extend(held)
    try:
        yield ctx, token
    finally:
        device.close()
        ctx.close()


@pytest.fixture(scope="module")
def plain(world: tuple[ServerContext, bytes]) -> Iterator[AsgiClient]:
    yield AsgiClient(build_plain_app(world[0]), headers={"content-type": "application/jose"})


def assert_uniform(response: object) -> None:
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.content == UNIFORM_ERROR  # type: ignore[attr-defined]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048))
def test_random_bodies_get_the_uniform_error(plain: AsgiClient, body: bytes) -> None:
    assert_uniform(plain.post("/m", content=body))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncations_and_bit_flips_get_the_uniform_error(
    plain: AsgiClient, world: tuple[ServerContext, bytes], data: st.DataObject
) -> None:
    token = world[1]
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(token) - 1))
        mutated = token[:cut]
    else:
        pos = data.draw(st.integers(0, len(token) - 1))
        bit = data.draw(st.integers(0, 7))
        mutated = token[:pos] + bytes([token[pos] ^ (1 << bit)]) + token[pos + 1 :]
    assert_uniform(plain.post("/m", content=mutated))


def test_replay_gets_the_uniform_error(
    plain: AsgiClient, world: tuple[ServerContext, bytes]
) -> None:
    assert_uniform(plain.post("/m", content=world[1]))


def test_valid_token_with_the_wrong_media_type_is_refused(
    world: tuple[ServerContext, bytes],
) -> None:
    fresh = FRESH[0]
    wrong = AsgiClient(build_plain_app(world[0]), headers={"content-type": "text/plain"})
    assert_uniform(wrong.post("/m", content=fresh))
    right = AsgiClient(build_plain_app(world[0]), headers={"content-type": "application/jose"})
    accepted = right.post("/m", content=fresh)
    assert accepted.status_code == 200
    assert accepted.headers["content-type"] == "application/jose"


def test_oversized_body_is_refused_before_parsing(plain: AsgiClient) -> None:
    assert_uniform(plain.post("/m", content=b"a" * (65536 + 1)))


def test_lying_content_length_is_refused(plain: AsgiClient) -> None:
    assert_uniform(plain.post("/m", content=b"x", headers={"content-length": "99999999"}))


def test_streamed_oversized_body_is_refused(plain: AsgiClient) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"a" * 8192

    assert_uniform(plain.post("/m", content=chunks()))


@pytest.fixture(scope="module")
def https(world: tuple[ServerContext, bytes]) -> Iterator[AsgiClient]:
    yield AsgiClient(build_https_app(world[0]), base_url="https://localhost:8443")


def test_metadata_names_the_endpoints(https: AsgiClient) -> None:
    meta = https.get("/.well-known/oauth-authorization-server").json()
    assert meta["jwks_uri"].endswith("/jwks.json")
    assert meta["hatchway_enrolment_token_endpoint"].endswith("/enrol/token")


@pytest.mark.parametrize("body", [b"", b"[]", b"not json", b"{" * 20000, b"[" * 5000 + b"]" * 5000])
def test_enrolment_rejects_malformed_json(https: AsgiClient, body: bytes) -> None:
    response = https.post("/enrol/token", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.headers["strict-transport-security"]


def test_keys_endpoint_needs_a_bearer_token(https: AsgiClient) -> None:
    response = https.post("/enrol/keys", json={})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
