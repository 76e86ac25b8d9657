"""Issue 7 part 3: every HTTP endpoint of both listeners, attacked with generated input.

The property, for each endpoint: whatever a client sends, the answer is below 500,
an error answer has the endpoint's documented body, and nothing is logged at ERROR.

Endpoints come from the apps themselves: every route, and the OpenAPI document FastAPI
derives from them (query and path parameters), completed here with each endpoint's
request body schema and the routes hidden from it, then driven by schemathesis. A
route added later without a schema here fails ``test_every_route_has_a_strategy``.
Each generated request then gets one mutation: truncated,
bit-flipped, a lone surrogate, NaN/Infinity/overflow, deep nesting, oversized, or
raw bytes. The apps run in process on one event loop (``LoopClient``); ``test_http_smoke.py``
sends a sample to a real server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.config import Settings
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from hatchway.server.plain_app import UNIFORM_ERROR, build_plain_app
from tests.server.harness import ErrorTrap, LoopClient

HTTPS_BASE = "https://localhost:8443"
PLAIN_BASE = "http://localhost:8080"

STR = {"type": "string", "maxLength": 64}
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
HEX = {"type": "string", "pattern": "^[0-9a-f]{0,40}$"}
JWK = {
    "type": "object",
    "properties": {"kty": {"enum": ["EC", "OKP", "RSA"]}, "crv": STR, "x": STR, "y": STR},
}


def obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "maxProperties": 6}


@dataclass(frozen=True)
class Endpoint:
    listener: str
    method: str
    path: str
    body: str  # "json", "form", "jose" or "none"
    schema: dict[str, Any]
    html: bool = False  # its documented error answer is a page


ENDPOINTS = [
    Endpoint("plain", "POST", "/m", "jose", {}),
    Endpoint("plain", "GET", "/healthz", "none", {}),
    Endpoint("https", "POST", "/m", "jose", {}),
    Endpoint("https", "GET", "/.well-known/oauth-authorization-server", "none", {}),
    Endpoint("https", "GET", "/jwks.json", "none", {}),
    Endpoint("plain", "GET", "/pki/crl", "none", {}),
    Endpoint("https", "GET", "/pki/crl", "none", {}),
    Endpoint("https", "POST", "/enrol/token", "json", obj(device_id=STR, secret=STR)),
    Endpoint(
        "https", "POST", "/enrol/keys", "json", obj(signing_key=JWK, encryption_key=JWK, proof=STR)
    ),
    Endpoint("https", "GET", "/se/", "none", {}),
    Endpoint("https", "GET", "/se/app.js", "none", {}),
    Endpoint("https", "GET", "/se/app.css", "none", {}),
    Endpoint("https", "GET", "/se/api/certificate", "none", {}),
    Endpoint("https", "POST", "/se/api/start", "json", obj()),
    Endpoint(
        "https",
        "POST",
        "/se/api/handshake",
        "json",
        obj(session=STR, responses={"type": "array", "items": HEX, "maxItems": 4}),
    ),
    Endpoint(
        "https",
        "POST",
        "/se/api/job",
        "json",
        obj(session=STR, responses={"type": "array", "items": HEX, "maxItems": 4}),
    ),
    Endpoint(
        "https",
        "POST",
        "/oauth/device_authorization",
        "form",
        obj(client_id=STR, login_hint=STR, scope=STR, device_name=STR),
    ),
    Endpoint(
        "https",
        "POST",
        "/oauth/token",
        "form",
        obj(
            grant_type={"enum": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]},
            device_code=STR,
            client_id=STR,
            refresh_token=STR,
            match_number=STR,
        ),
    ),
    Endpoint(
        "https",
        "POST",
        "/oauth/device/wait",
        "form",
        obj(device_code=STR, client_id=STR, timeout={"enum": ["0", "-1", "nan", "inf", "1e999"]}),
    ),
    Endpoint("https", "GET", "/login", "none", {}, html=True),
    Endpoint("https", "POST", "/login", "form", obj(csrf=STR, user_code=STR), html=True),
    Endpoint(
        "https",
        "POST",
        "/oauth/revoke",
        "form",
        obj(
            token=STR,
            token_type_hint=STR,
            client_id=STR,
            client_assertion_type={"enum": [JWT_BEARER]},
            client_assertion=STR,
        ),
    ),
    Endpoint(
        "https",
        "POST",
        "/oauth/introspect",
        "form",
        obj(
            token=STR,
            token_type_hint=STR,
            client_id=STR,
            client_assertion_type={"enum": [JWT_BEARER]},
            client_assertion=STR,
        ),
    ),
    Endpoint("https", "GET", "/login/", "none", {}, html=True),
    Endpoint("https", "POST", "/login/scram/start", "json", obj(user_code=STR, client_first=STR)),
    Endpoint("https", "POST", "/login/scram/finish", "json", obj(exchange=STR, client_final=STR)),
    Endpoint(
        "https", "POST", "/login/deny", "form", obj(csrf=STR, user_code=STR, action=STR), html=True
    ),
    Endpoint("https", "GET", "/login/static/{name}", "none", {}),
    Endpoint("https", "GET", "/api/whoami", "none", {}),
]

MEDIA = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "jose": "application/jose",
    "none": "text/plain",
}
SENTINEL = "\x00hatchway-sentinel\x00"
POISON = [
    '"\\ud800"',
    '"\\udfff"',
    '"\\ud800\\u0041"',
    '"\\udbff\\udbff"',
    "NaN",
    "-Infinity",
    "1e999",
    "123456789" * 40,
]


# -- the world -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerContext]:
    root: Path = tmp_path_factory.mktemp("props")
    settings = Settings(
        data_dir=root / "data",
        # Generous budgets so examples reach the parsers instead of the rate limits,
        # and cheap decoy verifiers so the suite stays fast.
        login_start_per_minute=10**6,
        login_attempts_per_minute=10**6,
        login_scram_iterations=4096,
    )
    ctx = ServerContext.create(settings, clock=FrozenClock(), random=system_random)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def clients(world: ServerContext) -> Iterator[dict[str, LoopClient]]:
    https = LoopClient(build_https_app(world), HTTPS_BASE)
    plain = LoopClient(build_plain_app(world), PLAIN_BASE)
    try:
        yield {"https": https, "plain": plain}
    finally:
        https.close()
        plain.close()


@pytest.fixture
def trap() -> Iterator[ErrorTrap]:
    handler = ErrorTrap()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def _fastapi(app: Any) -> FastAPI:
    while not isinstance(app, FastAPI):
        app = app.app  # RequestLog and friends keep the next app as .app
    return app


def test_every_route_has_a_strategy(world: ServerContext) -> None:
    routes = set()
    for name, build in (("https", build_https_app), ("plain", build_plain_app)):
        for route in _fastapi(build(world)).routes:
            if isinstance(route, APIRoute):
                routes |= {(name, m, route.path) for m in route.methods}
    assert routes == {(e.listener, e.method, e.path) for e in ENDPOINTS}


# -- the OpenAPI document -------------------------------------------------------------------


def openapi_document(ctx: ServerContext) -> dict[str, Any]:
    """FastAPI's document for both apps, plus what it cannot know (the routes read
    their bodies by hand), plus the routes it hides (the SE page and its assets)."""
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "hatchway", "version": "1"}}
    paths: dict[str, Any] = {}
    for build in (build_plain_app, build_https_app):
        for path, ops in _fastapi(build(ctx)).openapi()["paths"].items():
            for method, op in ops.items():
                paths.setdefault(path, {})[method] = {
                    "parameters": op.get("parameters", []),
                    "responses": {"default": {"description": "any"}},
                }
    for e in ENDPOINTS:
        op = paths.setdefault(e.path, {}).setdefault(
            e.method.lower(), {"responses": {"default": {"description": "any"}}}
        )
        if e.body in ("json", "form"):
            content = {MEDIA[e.body]: {"schema": e.schema}}
            op["requestBody"] = {"required": True, "content": content}
    doc["paths"] = paths
    return doc


@pytest.fixture(scope="module")
def api(world: ServerContext) -> Any:
    return schemathesis.openapi.from_dict(openapi_document(world))


# -- strategies ----------------------------------------------------------------------------


def _poisoned(value: Any, poison: str) -> bytes:
    text = json.dumps(value)
    return text.replace(json.dumps(SENTINEL), poison, 1).encode()


def _plant(value: Any, draw: st.DrawFn) -> Any:
    """Put the sentinel somewhere in ``value`` (a member, an item, or the whole)."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _plant(value[key], draw)}
    if isinstance(value, dict) and draw(st.booleans()):
        return {**value, draw(st.text(max_size=8)): SENTINEL}
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _plant(value[i], draw), *value[i + 1 :]]
    return SENTINEL


def _form(value: dict[str, Any], draw: st.DrawFn) -> bytes:
    pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()]
    if pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))  # a repeated parameter
    text = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs)
    if draw(st.booleans()):
        # Percent-encoded bytes that are not UTF-8: a lone surrogate, an overlong "/".
        text += "&" + draw(st.sampled_from(["x=%ED%A0%80", "%ED%A0%80=1", "x=%C0%AF", "x=%FF"]))
    return text.encode()


def bodies(draw: st.DrawFn, endpoint: Endpoint, value: Any) -> bytes:
    if not isinstance(value, dict):
        value = {}
    if endpoint.body == "form":
        encoded = _form(value, draw)
    elif endpoint.body == "jose":
        encoded = b".".join(draw(st.lists(st.binary(max_size=60), min_size=1, max_size=6)))
    else:
        encoded = json.dumps(value).encode()
    mutation = draw(
        st.sampled_from(
            ["none", "truncate", "bitflip", "poison", "deep", "oversize", "raw", "duplicate"]
        )
    )
    if mutation == "truncate" and encoded:
        return encoded[: draw(st.integers(0, len(encoded) - 1))]
    if mutation == "bitflip" and encoded:
        pos, bit = draw(st.integers(0, len(encoded) - 1)), draw(st.integers(0, 7))
        return encoded[:pos] + bytes([encoded[pos] ^ (1 << bit)]) + encoded[pos + 1 :]
    if mutation == "poison":
        return _poisoned(_plant(value, draw), draw(st.sampled_from(POISON)))
    if mutation == "deep":
        depth = draw(st.sampled_from([17, 100, 1025, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + b"1" + closer * depth
    if mutation == "oversize":
        size = draw(st.sampled_from([8 * 1024 + 1, 16 * 1024 + 1, 65536 + 1, 200_000]))
        return _poisoned({"a": SENTINEL}, json.dumps("x" * size))
    if mutation == "raw":
        return draw(st.binary(max_size=512))
    if mutation == "duplicate" and isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        return json.dumps(value)[:-1].encode() + b"," + json.dumps({key: 1})[1:].encode()
    return encoded


@st.composite
def requests(draw: st.DrawFn, endpoint: Endpoint, operation: Any, origin: str) -> dict[str, Any]:
    case = draw(operation.as_strategy())
    path = endpoint.path
    if "{name}" in path:
        generated = quote(str((case.path_parameters or {}).get("name", "")), safe="")
        name = draw(st.sampled_from(["login-page.js", generated, "..%2f..%2fetc%2fpasswd", "%00"]))
        path = path.replace("{name}", name or "x")
    query = "&".join(
        f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in (case.query or {}).items()
    )
    if draw(st.booleans()):
        query = "user_code=" + draw(st.sampled_from(["%ED%A0%80", "%FF", "A" * 5000, "%00"]))
    query = "?" + query if query else ""
    headers = {
        "content-type": draw(st.sampled_from([MEDIA[endpoint.body], "application/json", "x/y"]))
    }
    if draw(st.booleans()):
        headers["origin"] = draw(st.sampled_from([origin, "https://evil.example", "null", "x"]))
    if draw(st.booleans()):
        token = draw(st.text(alphabet="abcXYZ0123456789.-_", max_size=300))
        headers["authorization"] = draw(st.sampled_from(["Bearer ", "Basic ", "bearer"])) + token
    if draw(st.booleans()):
        headers["x-csrf-token"] = draw(
            st.text(alphabet="0123456789abcdef", max_size=64).map(str.encode)
            | st.sampled_from([b"\xe9t\xe9", b"\xff" * 64])  # latin-1 text in a header
        )
    if draw(st.booleans()):
        headers["cookie"] = "__Host-hw_csrf=" + draw(st.text(alphabet="abc123_-", max_size=40))
    value = case.body if isinstance(case.body, dict) else {}
    with_body = endpoint.method == "POST" or draw(st.booleans())
    body = bodies(draw, endpoint, value) if with_body else b""
    method = endpoint.method if draw(st.integers(0, 9)) else draw(st.sampled_from(["PUT", "GET"]))
    return {"method": method, "url": path + query, "headers": headers, "content": body}


# -- the property --------------------------------------------------------------------------


def check_answer(endpoint: Endpoint, status: int, media: str, content: bytes) -> None:
    """Below 500, and an error answer has the endpoint's documented body."""
    assert status < 500, content[:300]
    if status < 400:
        return
    if endpoint.listener == "plain" or (endpoint.path == "/m" and status == 400):
        assert content == UNIFORM_ERROR
        return
    if endpoint.html and media.startswith("text/html"):
        assert content.lstrip().lower().startswith(b"<!doctype html")
        return
    assert media == "application/json", (status, media, content[:200])
    doc = json.loads(content)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str), doc
    assert isinstance(doc.get("error_description", ""), str)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.listener} {e.method} {e.path}")
def test_no_input_gets_a_5xx_or_an_undocumented_error_or_an_error_log(
    endpoint: Endpoint,
    clients: dict[str, LoopClient],
    world: ServerContext,
    api: Any,
    trap: ErrorTrap,
) -> None:
    client = clients[endpoint.listener]
    operation = api[endpoint.path][endpoint.method]

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests(endpoint, operation, world.settings.issuer))
    def run(request: dict[str, Any]) -> None:
        response = client.request(**request)
        seen.append((response.status_code, repr(request).encode()))
        media = response.headers.get("content-type", "").split(";")[0]
        check_answer(endpoint, response.status_code, media, response.content)
        assert trap.lines() == []

    seen.clear()
    run()
    # The property ran on real, varied requests: not on a handful, not all refused alike.
    assert len(seen) >= 20
    assert len({sent for _, sent in seen}) >= 10


seen: list[tuple[int, bytes]] = []
