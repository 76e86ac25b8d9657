"""Issue 7 part 2 item 2 against a real ``hatchway serve``: a held-back poll.

An on-path party holds poll P1; the device times out and retransmits P2 (same mid),
which delivers command C. The party then releases P1 over a real socket. The server
must answer it with the very bytes it sent for P2, keep the device's result for that
delivery valid, and never hand C out again.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from hatchway.config import settings_from_env
from hatchway.device import Device, HttpTransport, TransportError
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess
from hatchway.store import CommandStatus

pytestmark = pytest.mark.e2e


class HoldFirst:
    """Swallows the first token (the device sees a timeout) and records the replies."""

    def __init__(self) -> None:
        self.inner = HttpTransport(timeout=10)
        self.held: bytes | None = None
        self.replies: list[bytes] = []

    def __call__(self, url: str, token: bytes) -> bytes:
        if self.held is None:
            self.held = token
            raise TransportError("timed out")
        reply = self.inner(url, token)
        self.replies.append(reply)
        return reply

    def close(self) -> None:
        self.inner.close()


def test_a_released_poll_gets_the_same_delivery(server: ServerProcess, tmp_path: Path) -> None:
    ctx = ServerContext.create(settings_from_env({"HATCHWAY_DATA_DIR": str(server.data_dir)}))
    try:
        secret = ctx.enrolment.provision("valve-1")
        attacker = HoldFirst()
        device = Device.enroll(
            server=server.https_url,
            device_id="valve-1",
            secret=secret,
            state_path=tmp_path / "valve-1.json",
            ca_file=server.ca_file,
            transport=attacker,
            retry_for=10,
        )
        cid = ctx.store.queue_command("valve-1", {"op": "open"}, now=time.time())
        command = device.poll()  # P1 held, P2 delivers C
        assert command is not None and command.cid == cid
        assert attacker.held is not None and len(attacker.replies) == 1

        released = httpx.post(
            server.http_url + "/m",
            content=attacker.held,
            headers={"content-type": "application/jose"},
        )
        assert released.status_code == 200
        assert released.content == attacker.replies[0]

        assert device.respond(command, {"opened": True}).body == {"status": "recorded"}
        assert device.poll() is None
        record = ctx.store.get_command(cid)
        assert record is not None and record.status is CommandStatus.DONE
        assert record.delivery_jti == command.message.jti
        device.close()
    finally:
        ctx.close()
