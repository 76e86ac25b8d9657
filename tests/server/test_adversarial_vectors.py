"""Replay tests/vectors/adversarial/http.jsonl: in process, and against a real server.

Each vector was a 5xx, a hang or a non-uniform answer before issue 7; each must now
get exactly its expected status and documented body, with nothing logged at ERROR.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.config import Settings
from hatchway.device import Device
from hatchway.msgsec import generate_signing_key
from hatchway.msgsec.keys import EncryptionKey, SigningKey
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from hatchway.server.plain_app import UNIFORM_ERROR, build_plain_app
from hatchway.server.process import ServerProcess
from tests.flows.conftest import enrol
from tests.server.harness import AsgiClient, error_trap, seal_to
from tests.server.rawhttp import error_lines, listeners, read_answer

VECTORS_FILE = Path(__file__).parents[1] / "vectors" / "adversarial" / "http.jsonl"
VECTORS: list[dict[str, Any]] = [
    json.loads(line) for line in VECTORS_FILE.read_text().splitlines() if line.strip()
]
IDS = [v["id"] for v in VECTORS]


def test_there_are_ten_and_each_says_why() -> None:
    assert len(VECTORS) == 10 and len(set(IDS)) == 10
    assert all(v["why"] and v["expect_status"] >= 400 for v in VECTORS)


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("$" + name, value)
    return text


def _body(vector: dict[str, Any], server_key: EncryptionKey, device: Device | None) -> bytes:
    seal = vector.get("seal")
    if seal is None:
        return base64.b64decode(vector.get("body_b64", ""))
    signer: SigningKey
    values: dict[str, str] = {}
    if seal["signer"] == "device":
        assert device is not None
        signer = device._signing
        now = int(device.clock())
        values = {
            "ALG": signer.alg.value,
            "KID": signer.kid,
            "ISS": device.device_id,
            "AUD": device.server_id,
            "IAT": str(now),
            "EXP": str(now + 60),
            "JTI": system_random(16).hex(),
            "SEQ": str(device._file.next_seq()),
        }
    else:
        signer = generate_signing_key()
    header = _fill(seal["header"], values).encode()
    claims = _fill(seal["claims"], values).encode()
    return seal_to(server_key, signer, header=header, claims=claims)


def _headers(vector: dict[str, Any], origin: str) -> dict[str, bytes]:
    return {k: _fill(v, {"ORIGIN": origin}).encode("latin-1") for k, v in vector["headers"].items()}


def check(vector: dict[str, Any], status: int, media: str, body: bytes) -> None:
    assert status == vector["expect_status"], (vector["id"], status, body[:200])
    expected = vector["expect_error"]
    if expected == "uniform":
        assert body == UNIFORM_ERROR
    elif expected == "html":
        assert media.startswith("text/html")
    else:
        assert json.loads(body)["error"] == expected


# -- in process ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerContext, Device]]:
    root: Path = tmp_path_factory.mktemp("vectors")
    clock = FrozenClock()
    ctx = ServerContext.create(Settings(data_dir=root / "data"), clock=clock, random=system_random)
    device = enrol(ctx, "meter-1", root / "meter-1.json", clock)
    try:
        yield ctx, device
    finally:
        device.close()
        ctx.close()


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if "raw_b64" not in v], ids=lambda v: v["id"]
)
def test_vector_in_process(vector: dict[str, Any], world: tuple[ServerContext, Device]) -> None:
    ctx, device = world
    build, base = (
        (build_plain_app, "http://localhost:8080")
        if vector["listener"] == "plain"
        else (build_https_app, "https://localhost:8443")
    )
    client = AsgiClient(build(ctx), base)
    body = _body(vector, ctx.identity.decryption_key.public(), device)
    with error_trap() as trap:
        response = client.request(
            vector["method"],
            vector["path"],
            content=body,
            headers=_headers(vector, ctx.settings.issuer),  # type: ignore[arg-type]
        )
    media = response.headers.get("content-type", "")
    check(vector, response.status_code, media, response.content)
    assert trap.lines() == []


# -- against a real server (the smoke test of the property suite) -------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("vectors-real")
    env = {"HATCHWAY_HEADER_TIMEOUT": "2", "HATCHWAY_BODY_TIMEOUT": "2"}
    with ServerProcess(root / "data", env=env) as srv:
        yield srv


def _server_encryption_key(server: ServerProcess) -> EncryptionKey:
    import ssl

    context = ssl.create_default_context(cafile=str(server.ca_file))
    jwks = httpx.get(server.https_url + "/jwks.json", verify=context, timeout=5).json()
    (enc,) = [k for k in jwks["keys"] if k.get("use") == "enc"]
    return EncryptionKey.from_jwk(enc)


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if v.get("seal", {}).get("signer") != "device"],
    ids=lambda v: v["id"],
)
def test_vector_against_a_real_server(vector: dict[str, Any], server: ServerProcess) -> None:
    listener = listeners(server)[vector["listener"]]
    if "raw_b64" in vector:
        request = base64.b64decode(vector["raw_b64"])
    else:
        body = _body(vector, _server_encryption_key(server), None)
        head = [f"{vector['method']} {vector['path']} HTTP/1.1".encode(), b"Host: localhost"]
        head += [k.encode() + b": " + v for k, v in _headers(vector, server.https_url).items()]
        head += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
        request = b"\r\n".join(head) + b"\r\n\r\n" + body
    started = time.monotonic()
    with listener.connect() as sock:
        sock.sendall(request)
        answer = read_answer(sock, 10)
    assert answer is not None, vector["id"]
    assert time.monotonic() - started < 10
    check(vector, answer.status, answer.headers.get("content-type", ""), answer.body)
    assert error_lines(server.log_path) == []
