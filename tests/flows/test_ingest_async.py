"""handle_async with group commit (issue 10 §1): concurrent messages share commits and
keep handle's semantics — exactly-once by ``mid``, replays refused, refusals isolated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hatchway.device import Device
from hatchway.errors import InvalidMessage
from hatchway.msgsec import Message, MessageType, seal
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from tests.flows.conftest import enrol


def sealed(
    device: Device, body: dict[str, Any], kind: MessageType = MessageType.TELEMETRY
) -> tuple[Message, bytes]:
    """What Device.send puts on the wire, without sending it."""
    message = device._message(kind, body, None)
    token = seal(
        message,
        signing_key=device._signing,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=device.random,
    )
    return message, token


async def send_all(ctx: ServerContext, tokens: list[bytes]) -> list[bytes | BaseException]:
    return await asyncio.gather(
        *(ctx.messages.handle_async(t) for t in tokens), return_exceptions=True
    )


def test_concurrent_messages_share_commits_exactly_once(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    a = enrol(ctx, "meter-a", tmp_path / "a.json", clock)
    b = enrol(ctx, "meter-b", tmp_path / "b.json", clock)
    a.send({"warm": 1})  # fills the key cache, so the rest stays on the loop
    b.send({"warm": 1})
    requests: list[tuple[Device, Message, bytes]] = []
    for i in range(20):
        for device in (a, b):
            message, token = sealed(
                device, {"mid": f"{device.device_id}-{i}", "readings": {"i": i}}
            )
            requests.append((device, message, token))
    # A retransmission of a's message 3 (fresh seq and jti, same mid), and an exact replay.
    retrans_msg, retrans = sealed(a, {"mid": "meter-a-3", "readings": {"i": 3}})
    replay = requests[0][2]
    batches_before = ctx.messages.committer.batches

    replies = asyncio.run(send_all(ctx, [t for _, _, t in requests] + [retrans, replay]))

    for (device, message, _), reply in zip(requests, replies, strict=False):
        assert isinstance(reply, bytes)
        ack = device._open_reply(reply, {message.jti}, {MessageType.ACK})
        assert ack.body["status"] in ("stored", "duplicate")
    ack = a._open_reply(replies[-2], {retrans_msg.jti}, {MessageType.ACK})
    assert ack.body == {"status": "duplicate"}
    assert isinstance(replies[-1], InvalidMessage)
    assert ctx.store.count_messages("meter-a") == 21  # 20 + the warm-up, once each
    assert ctx.store.count_messages("meter-b") == 21
    # 42 accepted in fewer commits than messages: they were grouped.
    assert ctx.messages.committer.batches - batches_before < 42


def test_refused_message_does_not_fail_its_batch(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    a = enrol(ctx, "meter-a", tmp_path / "a.json", clock)
    a.send({"warm": 1})
    first_msg, first = sealed(a, {"mid": "m1", "readings": {}})
    _, bad_mid = sealed(a, {"mid": "x" * 200, "readings": {}})  # refused before the store
    _, tampered = sealed(a, {"mid": "m3", "readings": {}})
    tampered = tampered[:-8] + (b"A" * 8 if tampered[-8:] != b"A" * 8 else b"B" * 8)
    last_msg, last = sealed(a, {"mid": "m4", "readings": {}})
    replies = asyncio.run(send_all(ctx, [first, bad_mid, tampered, first, last]))
    assert isinstance(replies[1], InvalidMessage)
    assert isinstance(replies[2], InvalidMessage)
    assert isinstance(replies[3], InvalidMessage)  # the same token twice: a replay
    stored = {"status": "stored"}
    assert a._open_reply(replies[0], {first_msg.jti}, {MessageType.ACK}).body == stored
    assert a._open_reply(replies[4], {last_msg.jti}, {MessageType.ACK}).body == stored
    assert ctx.store.count_messages("meter-a") == 3


def test_cache_miss_poll_and_restart_take_the_threaded_path(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    a = enrol(ctx, "meter-a", tmp_path / "a.json", clock)
    msg, token = sealed(a, {"mid": "m1", "readings": {}})
    ctx.messages.forget(a._signing.public().kid)
    [reply] = asyncio.run(send_all(ctx, [token]))  # key not cached: resolved via the store
    assert a._open_reply(reply, {msg.jti}, {MessageType.ACK}).body == {"status": "stored"}
    poll_msg, poll = sealed(a, {"mid": "p1"}, MessageType.POLL)
    [reply] = asyncio.run(send_all(ctx, [poll]))
    ack = a._open_reply(reply, {poll_msg.jti}, {MessageType.ACK, MessageType.COMMAND})
    assert ack.body == {"status": "no-command"}
    # After a restart the same token is a replay, whichever path opens it.
    again = ServerContext.create(ctx.settings, clock=clock, random=system_random)
    try:
        [refused] = asyncio.run(send_all(again, [token]))
        assert isinstance(refused, InvalidMessage)
    finally:
        again.close()
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)
