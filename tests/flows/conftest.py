"""In-process fixtures: a real ServerContext (SQLite, data dir, CA) with an injected clock,
and devices enrolled through the real enrolment service, talking through a transport
that calls the message service directly (the SDK's one narrow I/O callable)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.config import Settings
from hatchway.device import Device, DeviceState, StateFile
from hatchway.device.enrol import _proof
from hatchway.errors import InvalidMessage
from hatchway.msgsec import generate_decryption_key, generate_signing_key
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    settings = Settings(data_dir=tmp_path / "data", https_port=8443, http_port=8080)
    context = ServerContext.create(settings, clock=clock, random=system_random)
    try:
        yield context
    finally:
        context.close()


class DirectTransport:
    """Delivers sealed tokens straight to the message service; refusals look like HTTP 400."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.sent: list[bytes] = []

    def __call__(self, url: str, token: bytes) -> bytes:
        from hatchway.device import MessageRejected

        self.sent.append(token)
        try:
            return self.ctx.messages.handle(token)
        except InvalidMessage:
            raise MessageRejected("the server rejected the message") from None


def enrol(ctx: ServerContext, device_id: str, state_path: Path, clock: FrozenClock) -> Device:
    secret = ctx.enrolment.provision(device_id)
    first = ctx.enrolment.issue_first_token(device_id, secret)
    signing, decryption = generate_signing_key(), generate_decryption_key()
    proof = _proof(signing, decryption, device_id, ctx.settings.issuer, first.challenge)
    result = ctx.enrolment.exchange_keys(
        first.token,
        {
            "signing_key": signing.public().to_jwk(),
            "encryption_key": decryption.public().to_jwk(),
            "proof": proof,
        },
    )
    state = DeviceState(
        device_id=device_id,
        server_id=result["server_id"],
        signing_key=signing.to_jwk(private=True),
        encryption_key=decryption.to_jwk(private=True),
        suite=result["suite"],
        server_keys=result["server_keys"],
        endpoints=result["endpoints"],
    )
    file = StateFile(state_path, state)
    file.save()
    return Device(file, transport=DirectTransport(ctx), clock=clock, retry_for=0)
