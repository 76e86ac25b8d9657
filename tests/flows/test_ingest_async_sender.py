"""handle_async with the transport's sender (the MQTT gateway's path): a token signed by
another device than the topic names is refused and leaves no trace, whether the
signer's key is cached (the loop's fast path) or not (the worker-thread path)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from hatchway.errors import InvalidMessage
from hatchway.runtime import FrozenClock
from hatchway.server.context import ServerContext
from tests.flows.conftest import enrol
from tests.flows.test_ingest_async import sealed


@pytest.mark.parametrize("warm", [True, False], ids=["cached", "uncached"])
def test_a_token_on_another_devices_topic_is_refused_and_burns_nothing(
    ctx: ServerContext,
    tmp_path: Path,
    clock: FrozenClock,
    warm: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = enrol(ctx, "meter-a", tmp_path / "a.json", clock)
    enrol(ctx, "meter-b", tmp_path / "b.json", clock)
    if warm:
        a.send({"warm": 1})
    else:
        ctx.messages._peers.clear()  # a replica that has not seen meter-a yet
    before = ctx.store.count_messages("meter-a")
    _, token = sealed(a, {"mid": "moved", "readings": {"n": 1}})
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidMessage):
        asyncio.run(ctx.messages.handle_async(token, sender="meter-b"))
    assert "signed by 'meter-a', sent as 'meter-b'" in caplog.text
    assert ctx.store.count_messages("meter-a") == before
    assert ctx.store.count_messages("meter-b") == 0
    # Nothing was burnt by the refusal: on its own topic the same token is accepted.
    asyncio.run(ctx.messages.handle_async(token, sender="meter-a"))
    assert ctx.store.count_messages("meter-a") == before + 1
