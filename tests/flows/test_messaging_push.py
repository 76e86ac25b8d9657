"""What the MQTT adapter adds to the messaging flow: the sender a topic names, and
server-initiated command pushes claimed by exactly one replica (docs/mqtt.md)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from hatchway.device import Device
from hatchway.errors import InvalidMessage
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from hatchway.store import CommandStatus, SealedDelivery
from tests.flows.conftest import DirectTransport, enrol


class PushTransport(DirectTransport):
    """DirectTransport plus the downlink pushes an MQTT transport would deliver."""

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.pushes: deque[bytes] = deque()

    def receive(self, timeout: float | None = None) -> bytes | None:
        return self.pushes.popleft() if self.pushes else None


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    dev = enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)
    dev._transport = PushTransport(ctx)
    return dev


def pushes(device: Device) -> deque[bytes]:
    transport = device._transport
    assert isinstance(transport, PushTransport)
    return transport.pushes


def test_a_token_on_another_devices_topic_is_refused_and_leaves_no_trace(
    device: Device, ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    enrol(ctx, "meter-2", tmp_path / "meter-2.json", clock)
    device.send({"n": 0})
    transport = device._transport
    assert isinstance(transport, DirectTransport)
    device._transport = lambda url, token: (transport.sent.append(token), b"")[1]
    with pytest.raises(InvalidMessage):
        device.send({"n": 1})  # sealed but not delivered; we deliver it by hand below
    token = transport.sent[-1]
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token, sender="meter-2")
    assert ctx.store.count_messages("meter-1") == 1
    # Nothing was burnt by the refusal: on its own topic the same token is accepted.
    ctx.messages.handle(token, sender="meter-1")
    assert ctx.store.count_messages("meter-1") == 2


def test_a_pushed_command_is_claimed_by_exactly_one_replica(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    other = ServerContext.create(ctx.settings, clock=clock, random=system_random)  # replica 2
    try:
        cid = ctx.store.queue_command("meter-1", {"op": "reboot", "delay": 5}, now=clock())
        (queued,) = ctx.store.queued_commands()
        assert queued.command_id == cid
        results = [ctx.messages.push_command(queued), other.messages.push_command(queued)]
    finally:
        other.close()
    sealed = [r for r in results if r is not None]
    assert len(sealed) == 1
    assert ctx.store.queued_commands() == []
    pushes(device).append(sealed[0])
    command = device.receive(timeout=0)
    assert command is not None and command.cid == cid
    assert command.body == {"cid": cid, "op": "reboot", "args": {"delay": 5}}
    record = ctx.store.get_command(cid)
    assert record is not None and record.delivery_jti == command.message.jti
    assert device.respond(command, {"ok": True}).body == {"status": "recorded"}
    record = ctx.store.get_command(cid)
    assert record is not None and record.status is CommandStatus.DONE


def test_a_push_replayed_by_the_broker_is_refused_by_the_device(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    ctx.store.queue_command("meter-1", {"op": "x"}, now=clock())
    (queued,) = ctx.store.queued_commands()
    sealed = ctx.messages.push_command(queued)
    assert sealed is not None
    pushes(device).extend([sealed, sealed])
    assert device.receive(timeout=0) is not None
    with pytest.raises(InvalidMessage):
        device.receive(timeout=0)


def test_replies_on_the_downlink_are_not_commands(device: Device, ctx: ServerContext) -> None:
    """A reply whose request gave up (or a copy the broker redelivered) is skipped."""
    real, sent = device._transport, []
    device._transport = lambda url, token: (sent.append(token), b"")[1]
    with pytest.raises(InvalidMessage):
        device.send({"n": 1})  # the request gives up without a reply...
    device._transport = real
    pushes(device).append(ctx.messages.handle(sent[-1]))  # ...which arrives later
    assert device.receive(timeout=0) is None
    assert device.send({"n": 2}).body == {"status": "stored"}  # nothing disturbed


def test_queued_commands_are_only_those_an_enrolled_device_has_not_been_given(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    ctx.enrolment.provision("meter-new")  # provisioned, not enrolled: nothing to push to
    ctx.store.queue_command("meter-new", {"op": "x"}, now=clock())
    first = ctx.store.queue_command("meter-1", {"op": "a"}, now=clock())
    second = ctx.store.queue_command("meter-1", {"op": "b"}, now=clock())
    assert [c.command_id for c in ctx.store.queued_commands()] == [first, second]
    assert device.poll() is not None  # an HTTP poll delivers the first
    assert [c.command_id for c in ctx.store.queued_commands()] == [second]
    first_push = SealedDelivery(jti="j1", exp=clock() + 60, reply=b"sealed-1")
    second_push = SealedDelivery(jti="j2", exp=clock() + 60, reply=b"sealed-2")
    assert ctx.store.claim_command_delivery(second, "meter-1", sealed=first_push, now=clock())
    assert not ctx.store.claim_command_delivery(second, "meter-1", sealed=second_push, now=clock())
    record = ctx.store.get_command(second)
    assert record is not None and record.delivery_jti == "j1"
    assert ctx.store.answers_delivery("meter-1", second, "j1")
    assert not ctx.store.answers_delivery("meter-1", second, "j2")


def test_a_poll_after_a_push_still_gets_the_command_and_either_delivery_answers(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    """A push may reach nobody (the device polls over HTTP, or had no session yet), so
    it never holds a poll back; the push's jti stays a valid answer, first result wins."""
    cid = ctx.store.queue_command("meter-1", {"op": "late"}, now=clock())
    (queued,) = ctx.store.queued_commands()
    sealed = ctx.messages.push_command(queued)
    assert sealed is not None
    polled = device.poll()
    assert polled is not None and polled.cid == cid
    pushes(device).append(sealed)
    pushed = device.receive(timeout=0)
    assert pushed is not None and pushed.cid == cid
    assert pushed.message.jti != polled.message.jti
    assert ctx.store.answers_delivery("meter-1", cid, pushed.message.jti)
    assert ctx.store.answers_delivery("meter-1", cid, polled.message.jti)
    assert device.respond(pushed, {"ok": True}).body == {"status": "recorded"}
    record = ctx.store.get_command(cid)
    assert record is not None and record.status is CommandStatus.DONE
