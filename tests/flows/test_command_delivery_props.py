"""Property: however an on-path party holds, releases and replays polls, and however
the clock moves, a command is handed to the device once per unexpired delivery and
answered once (issue 7 part 2 item 2, kept as a property test).

Each example enrols a fresh device in one real ServerContext and runs a random script
of: queue a command, poll (optionally with the first copy held back), release a held
poll, replay a delivered poll, answer a received command, move the clock.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.device import Command, Device, MessageRejected, TransportError
from hatchway.errors import InvalidMessage
from hatchway.msgsec import Message, MessageType, OpenPolicy, open_message
from hatchway.runtime import FrozenClock
from hatchway.server.context import ServerContext
from hatchway.store import CommandStatus
from tests.flows.conftest import DirectTransport, enrol

_devices = itertools.count()

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("queue"), st.just(0)),
        st.tuples(st.just("poll"), st.just(0)),
        st.tuples(st.just("poll-held"), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("replay"), st.integers(0, 7)),
        st.tuples(st.just("answer"), st.integers(0, 7)),
        st.tuples(st.just("wait"), st.sampled_from([1, 60, 119, 200, 301])),
    ),
    max_size=14,
)


@dataclass
class Attacker:
    """Holds the first copy of a poll when told to, and keeps every token it saw."""

    inner: DirectTransport
    hold_next: bool = False
    held: list[bytes] = field(default_factory=list)
    delivered: list[tuple[bytes, bytes]] = field(default_factory=list)  # (poll, reply)

    def __call__(self, url: str, token: bytes) -> bytes:
        if self.hold_next:
            self.hold_next = False
            self.held.append(token)
            raise TransportError("timed out")
        reply = self.inner(url, token)
        self.delivered.append((token, reply))
        return reply


@given(script=steps)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_commands_are_delivered_once_per_unexpired_delivery(
    script: list[Step], ctx: ServerContext, clock: FrozenClock, tmp_path: Path
) -> None:
    device_id = f"prop-{next(_devices)}"
    device = enrol(ctx, device_id, tmp_path / f"{device_id}.json", clock)
    direct = device._transport
    assert isinstance(direct, DirectTransport)
    attacker = Attacker(direct)
    device._transport = attacker
    device.retry_for = 5
    received: list[Command] = []
    live_until: dict[str, float] = {}  # cid -> exp of its newest delivery
    answered: dict[str, object] = {}  # cid -> the first result the server took
    replies_by_poll: dict[bytes, bytes] = {}

    try:
        for action, arg in script:
            now = clock()
            if action == "queue":
                ctx.store.queue_command(device_id, {"op": "x"}, now=now)
            elif action in ("poll", "poll-held"):
                attacker.hold_next = action == "poll-held"
                command = device.poll()
                token, reply = attacker.delivered[-1]
                replies_by_poll[token] = reply
                if command is not None:
                    # Never handed out while an earlier delivery of it is unexpired.
                    assert live_until.get(command.cid, 0) <= now
                    assert command.cid not in answered
                    live_until[command.cid] = command.message.exp
                    received.append(command)
            elif action == "release" and attacker.held:
                held = attacker.held[arg % len(attacker.held)]
                try:
                    raw = ctx.messages.handle(held)
                except InvalidMessage:
                    continue  # a stale or already-seen copy: refused
                late = open_reply(device, raw)
                if late.typ is MessageType.COMMAND:
                    # Only ever the delivery its retransmission got, byte for byte.
                    assert raw in replies_by_poll.values()
                    cid = str(late.body["cid"])
                    assert live_until[cid] > now and late.exp == live_until[cid]
                else:
                    assert late.body == {"status": "no-command"}
            elif action == "replay" and attacker.delivered:
                token, _ = attacker.delivered[arg % len(attacker.delivered)]
                try:
                    ctx.messages.handle(token)
                    raise AssertionError("a replayed poll was accepted")
                except InvalidMessage:
                    pass
            elif action == "answer" and received:
                command = received[arg % len(received)]
                try:
                    device.respond(command, {"n": arg})
                except MessageRejected:
                    raise AssertionError("a result for a real delivery was refused") from None
                answered.setdefault(command.cid, {"n": arg})
            elif action == "wait":
                clock.advance(arg)
        for cid, first in answered.items():
            record = ctx.store.get_command(cid)
            assert record is not None and record.status is CommandStatus.DONE
            assert record.result is not None and record.result["result"] == first
    finally:
        device.close()


def open_reply(device: Device, raw: bytes) -> Message:
    message, _ = open_message(
        raw,
        decryption_keys={device._decryption.kid: device._decryption},
        resolve_sender=lambda kid: device._server,
        policy=OpenPolicy(
            audience=device.device_id,
            expected=frozenset({MessageType.ACK, MessageType.COMMAND}),
        ),
        now=device.clock(),
    )
    return message
