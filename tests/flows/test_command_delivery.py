"""Issue 7 part 2 item 2: a command is handed to a device once (claim 5's commands).

The attack: an on-path party holds poll P1, lets its retransmission P2 (same ``mid``)
deliver command C, then releases P1. Before the fix the server delivered C a second
time under a new jti, overwrote the delivery record, refused the device's result for
the first delivery and handed C out again at the next poll: C ran twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.device import Device, MessageRejected, TransportError
from hatchway.msgsec import Message, MessageType, OpenPolicy, open_message
from hatchway.runtime import FrozenClock
from hatchway.server.context import ServerContext
from hatchway.store import CommandStatus
from tests.flows.conftest import DirectTransport, enrol


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    return enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)


class HoldFirst:
    """On-path attacker: swallows the first token sent (the device sees a timeout)."""

    def __init__(self, inner: DirectTransport) -> None:
        self.inner = inner
        self.held: bytes | None = None
        self.replies: list[bytes] = []

    def __call__(self, url: str, token: bytes) -> bytes:
        if self.held is None:
            self.held = token
            raise TransportError("timed out")
        reply = self.inner(url, token)
        self.replies.append(reply)
        return reply


def _attack(device: Device) -> HoldFirst:
    direct = device._transport
    assert isinstance(direct, DirectTransport)
    attacker = HoldFirst(direct)
    device._transport = attacker
    device.retry_for = 5
    return attacker


def test_a_held_back_poll_gets_the_same_delivery(device: Device, ctx: ServerContext) -> None:
    cid = ctx.store.queue_command("meter-1", {"op": "open-valve"}, now=1.0)
    attacker = _attack(device)
    command = device.poll()  # P1 held; P2 (same mid) delivers C
    assert command is not None and command.cid == cid
    assert attacker.held is not None and len(attacker.replies) == 1

    late = ctx.messages.handle(attacker.held)  # the attacker releases P1
    assert late == attacker.replies[0]  # the very same sealed delivery, not a second one
    record = ctx.store.get_command(cid)
    assert record is not None and record.delivery_jti == command.message.jti

    ack = device.respond(command, {"opened": True})  # the result for J2 still counts
    assert ack.body == {"status": "recorded"}
    done = ctx.store.get_command(cid)
    assert done is not None and done.status is CommandStatus.DONE
    assert device.poll() is None  # C is not handed out again


def test_the_held_poll_released_after_the_result_changes_nothing(
    device: Device, ctx: ServerContext
) -> None:
    cid = ctx.store.queue_command("meter-1", {"op": "open-valve"}, now=1.0)
    attacker = _attack(device)
    command = device.poll()
    assert command is not None and attacker.held is not None
    device.respond(command, {"opened": True})
    ctx.messages.handle(attacker.held)
    done = ctx.store.get_command(cid)
    assert done is not None and done.status is CommandStatus.DONE
    assert done.result is not None and done.result["result"] == {"opened": True}
    assert device.poll() is None


def test_a_held_poll_released_after_a_command_was_queued_gets_no_command(
    device: Device, ctx: ServerContext
) -> None:
    """P2 was answered "no command"; P1, released once C is queued, must not take C away
    to a connection the device has given up on (C would be stuck until it expired)."""
    attacker = _attack(device)
    assert device.poll() is None  # P1 held, P2: no command
    assert attacker.held is not None
    cid = ctx.store.queue_command("meter-1", {"op": "open-valve"}, now=1.0)
    late = open_as_device(device, ctx.messages.handle(attacker.held))
    assert late.typ is MessageType.ACK and late.body == {"status": "no-command"}
    command = device.poll()  # the device's own next poll gets C at once
    assert command is not None and command.cid == cid


def test_a_lost_delivery_is_resent_verbatim_to_the_retransmission(
    device: Device, ctx: ServerContext
) -> None:
    """The reply to P1 is lost; P2 (new jti) gets P1's sealed reply and the device takes it."""
    cid = ctx.store.queue_command("meter-1", {"op": "reboot"}, now=1.0)
    direct = device._transport
    assert isinstance(direct, DirectTransport)
    replies: list[bytes] = []

    def lossy(url: str, token: bytes) -> bytes:
        replies.append(direct(url, token))
        if len(replies) == 1:
            raise TransportError("reply lost")
        return replies[-1]

    device._transport = lossy
    device.retry_for = 5
    command = device.poll()
    assert command is not None and command.cid == cid
    assert len(replies) == 2 and replies[0] == replies[1]
    assert device.respond(command, {"ok": 1}).body == {"status": "recorded"}


def test_a_new_poll_does_not_get_an_outstanding_command(device: Device, ctx: ServerContext) -> None:
    first = ctx.store.queue_command("meter-1", {"op": "a"}, now=1.0)
    second = ctx.store.queue_command("meter-1", {"op": "b"}, now=1.0)
    got = device.poll()
    assert got is not None and got.cid == first
    again = device.poll()  # a fresh poll (new mid): the next command, not `first` again
    assert again is not None and again.cid == second
    assert device.poll() is None


def test_an_unanswered_delivery_is_handed_out_again_once_it_expires(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    cid = ctx.store.queue_command("meter-1", {"op": "reboot"}, now=1.0)
    first = device.poll()
    assert first is not None and device.poll() is None
    clock.advance(ctx.settings.message_ttl)  # the delivery can no longer be opened
    second = device.poll()
    assert second is not None and second.cid == cid
    assert second.message.jti != first.message.jti
    # A device that opened the first delivery in time may still answer it, once.
    assert device.respond(first, {"ok": 1}).body == {"status": "recorded"}
    assert device.respond(second, {"ok": 2}).body == {"status": "recorded"}
    record = ctx.store.get_command(cid)
    assert record is not None and record.result is not None
    assert record.result["result"] == {"ok": 1}  # the first answer wins; done is final
    assert device.poll() is None


def test_a_result_must_answer_a_delivery_of_that_command(
    device: Device, ctx: ServerContext
) -> None:
    first = ctx.store.queue_command("meter-1", {"op": "a"}, now=1.0)
    ctx.store.queue_command("meter-1", {"op": "b"}, now=1.0)
    got_first, got_second = device.poll(), device.poll()
    assert got_first is not None and got_second is not None
    before = ctx.store.count_messages("meter-1")
    with pytest.raises(MessageRejected):
        # Answers `first` but names the delivery of the other command in irt.
        device._exchange(
            MessageType.COMMAND_RESULT,
            {"cid": first, "ok": True},
            {MessageType.ACK},
            irt=got_second.message.jti,
        )
    assert ctx.store.count_messages("meter-1") == before
    record = ctx.store.get_command(first)
    assert record is not None and record.status is CommandStatus.DELIVERED


def test_a_poll_replayed_after_its_delivery_expired_gets_no_command(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    """Released late (still fresh itself, but its delivery expired): no second copy."""
    cid = ctx.store.queue_command("meter-1", {"op": "reboot"}, now=1.0)
    device.message_ttl = ctx.settings.message_ttl * 2  # the held poll outlives the delivery
    attacker = _attack(device)
    assert device.poll() is not None and attacker.held is not None
    clock.advance(ctx.settings.message_ttl)
    late = open_as_device(device, ctx.messages.handle(attacker.held))
    assert late.typ is MessageType.ACK and late.body == {"status": "no-command"}
    # The next real poll gets the expired delivery's command again, exactly once.
    again = device.poll()
    assert again is not None and again.cid == cid
    assert device.poll() is None


def open_as_device(device: Device, raw: bytes) -> Message:
    """Open a reply with the device's keys, as the SDK would (without the irt binding)."""
    message, _ = open_message(
        raw,
        decryption_keys={device._decryption.kid: device._decryption},
        resolve_sender=lambda kid: device._server,
        policy=OpenPolicy(
            audience=device.device_id, expected=frozenset({MessageType.ACK, MessageType.COMMAND})
        ),
        now=device.clock(),
    )
    return message


@pytest.mark.parametrize(
    ("cid", "irt"),
    [
        # (The message layer already refuses a non-string cid and an irt over 128.)
        ("ok", "j'; --"),
        ("ok", "é" * 100),
        ("x" * 300, "ok"),  # longer than the store's columns
        ("é", "ok"),
    ],
)
def test_a_result_naming_no_possible_delivery_is_refused_before_the_store(
    device: Device, ctx: ServerContext, cid: str, irt: str
) -> None:
    real = ctx.store.queue_command("meter-1", {"op": "a"}, now=1.0)
    got = device.poll()
    assert got is not None
    body = {"cid": real if cid == "ok" else cid, "ok": True}
    before = ctx.store.count_messages("meter-1")
    with pytest.raises(MessageRejected):
        device._exchange(
            MessageType.COMMAND_RESULT,
            body,
            {MessageType.ACK},
            irt=got.message.jti if irt == "ok" else irt,
        )
    assert ctx.store.count_messages("meter-1") == before
