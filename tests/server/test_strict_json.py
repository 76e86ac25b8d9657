"""Issue 7 part 2 item 1: lone UTF-16 surrogates (and other non-I-JSON) from a client are
refused with each endpoint's documented 4xx, never a 500.

Each of the three reproductions answered 500 on the old code: the JOSE codec's
standard-library fallback and ``json.loads`` accept the escape ``"\\ud800"``, and the
resulting string fails later in sqlite3 (``find_device_by_signing_kid``,
``get_command``) or in ``hash_secret``'s ``.encode()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.config import Settings
from hatchway.device import Device
from hatchway.msgsec import MessageType, generate_signing_key
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from hatchway.server.plain_app import UNIFORM_ERROR, build_plain_app
from hatchway.strictjson import JsonError, loads
from tests.flows.conftest import enrol
from tests.server.harness import AsgiClient, error_trap, seal_raw

JOSE = {"content-type": "application/jose"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerContext, Device]]:
    root: Path = tmp_path_factory.mktemp("strict")
    clock = FrozenClock()
    ctx = ServerContext.create(Settings(data_dir=root / "data"), clock=clock, random=system_random)
    device = enrol(ctx, "meter-1", root / "meter-1.json", clock)
    try:
        yield ctx, device
    finally:
        device.close()
        ctx.close()


def test_inner_kid_with_a_lone_surrogate_gets_the_uniform_400(
    world: tuple[ServerContext, Device],
) -> None:
    ctx, _ = world
    anyone = generate_signing_key()  # "sealed with any key": no enrolment needed
    header = b'{"alg":"ES256","kid":"\\ud800","typ":"hatchway-telemetry+jwt"}'
    token = seal_raw(ctx, anyone, header=header, claims=b'{"iss":"x"}')
    plain = AsgiClient(build_plain_app(ctx), "http://localhost:8080")
    with error_trap() as trap:
        response = plain.post("/m", content=token, headers=JOSE)
    assert (response.status_code, response.content) == (400, UNIFORM_ERROR)
    assert trap.lines() == []


def test_command_result_cid_with_a_lone_surrogate_gets_the_uniform_400(
    world: tuple[ServerContext, Device],
) -> None:
    ctx, device = world
    message = device._message(
        MessageType.COMMAND_RESULT, {"cid": "\ud800", "ok": True, "mid": "m-1"}, "some-jti"
    )
    claims = json.dumps(message.to_claims()).encode()  # ensure_ascii: the escape "\ud800"
    assert b"\\ud800" in claims
    signer = device._signing
    header = json.dumps(
        {"alg": signer.alg.value, "kid": signer.kid, "typ": MessageType.COMMAND_RESULT.value}
    ).encode()
    token = seal_raw(ctx, signer, header=header, claims=claims)
    plain = AsgiClient(build_plain_app(ctx), "http://localhost:8080")
    with error_trap() as trap:
        response = plain.post("/m", content=token, headers=JOSE)
    assert (response.status_code, response.content) == (400, UNIFORM_ERROR)
    assert trap.lines() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"device_id":"ghost","secret":"\\ud800"}',  # the reproduction
        b'{"device_id":"\\udfff","secret":"s"}',
        b'{"device_id":"ghost","secret":"\xed\xa0\x80"}',  # raw surrogate: not UTF-8
        b'{"device_id":"ghost","secret":NaN}',
        b'{"device_id":"ghost","secret":1e999}',
        b'{"device_id":"a","device_id":"b","secret":"s"}',
        b'{"device_id":' * 40 + b"1" + b"}" * 40,
    ],
)
def test_enrolment_token_refuses_non_ijson_with_invalid_request(
    world: tuple[ServerContext, Device], body: bytes
) -> None:
    https = AsgiClient(build_https_app(world[0]), "https://localhost:8443")
    with error_trap() as trap:
        response = https.post("/enrol/token", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert trap.lines() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"session":"\\ud800","responses":[]}',
        b'{"session":"s","responses":["9000"],"responses":[]}',
    ],
)
def test_se_api_refuses_non_ijson_with_invalid_request(
    world: tuple[ServerContext, Device], body: bytes
) -> None:
    ctx = world[0]
    https = AsgiClient(build_https_app(ctx), "https://localhost:8443")
    origin = ctx.settings.issuer
    with error_trap() as trap:
        response = https.post(
            "/se/api/handshake",
            content=body,
            headers={"content-type": "application/json", "origin": origin},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert trap.lines() == []


@pytest.mark.parametrize(
    "text",
    [
        b'"\\ud800"',
        b'["\\udc00"]',
        b'{"a":NaN}',
        b"[1e400]",
        b'{"a":1,"a":1}',
        b"[" * 17 + b"]" * 17,
    ],
)
def test_the_shared_reader_refuses(text: bytes) -> None:
    with pytest.raises(JsonError):
        loads(text)
    with pytest.raises(JsonError):
        loads(text.decode("utf-8"))


def test_the_shared_reader_keeps_valid_pairs_and_escapes() -> None:
    assert loads(b'{"a":"\\ud83d\\ude00","b":[1,2.5,true,null]}') == {
        "a": "\U0001f600",
        "b": [1, 2.5, True, None],
    }
    assert loads(b" [ 1 ] ") == [1]


def test_device_sdk_refuses_a_server_answer_that_is_not_ijson() -> None:
    import httpx

    from hatchway.device.enrol import EnrolmentError, _decode

    request = httpx.Request("POST", "https://localhost:8443/enrol/token")
    for body in (b'{"first_token":"\\ud800"}', b'{"a":1,"a":2}', b'{"expires_in":NaN}'):
        with pytest.raises(EnrolmentError, match="not JSON"):
            _decode(httpx.Response(200, content=body, request=request))


def test_bridge_refuses_a_page_request_that_is_not_ijson() -> None:
    from hatchway.se.bridge import RelayError, parse_request

    assert parse_request('{"id":1,"apdus":["00a4040000"]}')[0] == 1
    for text in ('{"id":"\\ud800","apdus":["00a4040000"]}', '{"apdus":[],"apdus":["00a4040000"]}'):
        with pytest.raises(RelayError):
            parse_request(text)


def test_the_shared_reader_keeps_integers_exact() -> None:
    # orjson alone would read these as doubles: two readers, two meanings.
    assert loads(b"[-9223372036854775809]") == [-9223372036854775809]
    assert loads(b"18446744073709551616") == 18446744073709551616
    assert loads(b'{"n":123456789012345678901234567890}')["n"] == 123456789012345678901234567890
    with pytest.raises(JsonError):
        loads(b"[" + b"9" * 5000 + b"]")
