"""The plain listener's pure-ASGI ``POST /m`` answers exactly like the FastAPI route
it bypasses (issue 10 §1); every other request still reaches the FastAPI app."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.config import Settings
from hatchway.errors import InvalidMessage
from hatchway.msgsec import MessageType
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app
from hatchway.server.plain_app import UNIFORM_ERROR, build_plain_app
from tests.flows.conftest import enrol
from tests.flows.test_ingest_async import sealed
from tests.server.test_http_adapters import AsgiClient

JOSE = {"content-type": "application/jose"}


def test_fast_path_and_fastapi_route_answer_alike(tmp_path: Path) -> None:
    clock = FrozenClock()
    ctx = ServerContext.create(
        Settings(data_dir=tmp_path / "data"), clock=clock, random=system_random
    )
    try:
        device = enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)
        fast = AsgiClient(build_plain_app(ctx), headers=JOSE)
        route = AsgiClient(build_https_app(ctx), base_url="https://localhost:8443", headers=JOSE)
        for client in (fast, route):
            message, token = sealed(device, {"mid": client.base_url, "readings": {}})
            ok = client.post("/m", content=token)
            assert (ok.status_code, ok.headers["content-type"]) == (200, "application/jose")
            ack = device._open_reply(ok.content, {message.jti}, {MessageType.ACK})
            assert ack.body == {"status": "stored"}
            again = client.post("/m", content=token)  # a replay
            assert (again.status_code, again.content) == (400, UNIFORM_ERROR)
            assert again.headers["content-type"] == "application/json"
            wrong = client.post("/m", content=token, headers={"content-type": "text/plain"})
            assert (wrong.status_code, wrong.content) == (400, UNIFORM_ERROR)
        assert ctx.store.count_messages("meter-1") == 2
        # Not POST /m: FastAPI's answers, unchanged.
        assert fast.get("/healthz").json() == {"status": "ok"}
        assert fast.get("/m").status_code == 405
        assert fast.post("/elsewhere", content=b"x").status_code == 404
    finally:
        ctx.close()


def test_a_server_fault_is_a_500_not_the_uniform_refusal(tmp_path: Path) -> None:
    """A store outage must not look like "invalid" (the device would drop the message)."""
    clock = FrozenClock()
    ctx = ServerContext.create(
        Settings(data_dir=tmp_path / "data"), clock=clock, random=system_random
    )
    device = enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)
    device.send({"warm": 1})
    _, token = sealed(device, {"mid": "m1", "readings": {}})
    ctx.messages.committer.close()  # the writer is gone: accepting raises RuntimeError
    try:
        with pytest.raises(RuntimeError):
            AsgiClient(build_plain_app(ctx), headers=JOSE).post("/m", content=token)
        with pytest.raises(InvalidMessage):
            ctx.messages.handle(b"not a token")
    finally:
        ctx.close()
