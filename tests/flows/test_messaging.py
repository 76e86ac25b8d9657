"""Sealed messages after TLS (claim step 5; claims 2–5), attacked at the flow level."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.device import Device, MessageRejected, StateFile
from hatchway.errors import InvalidMessage
from hatchway.msgsec import Message, MessageType, seal
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from tests.flows.conftest import DirectTransport, enrol


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    return enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)


def transport(device: Device) -> DirectTransport:
    t = device._transport
    assert isinstance(t, DirectTransport)
    return t


def test_telemetry_is_stored_and_acknowledged(device: Device, ctx: ServerContext) -> None:
    ack = device.send({"kwh": 12.5})
    assert ack.typ is MessageType.ACK and ack.body == {"status": "stored"}
    (stored,) = ctx.store.list_messages("meter-1")
    assert stored.body["readings"] == {"kwh": 12.5}


def test_replay_is_refused_even_after_restart(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    device.send({"n": 1})
    token = transport(device).sent[-1]
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)
    # A fresh context on the same data dir is a server restart.
    again = ServerContext.create(ctx.settings, clock=clock, random=system_random)
    try:
        with pytest.raises(InvalidMessage):
            again.messages.handle(token)
    finally:
        again.close()


def test_reordering_within_the_window_is_accepted_beyond_it_refused(
    device: Device, ctx: ServerContext
) -> None:
    held = []
    real = transport(device)
    device._transport = lambda url, token: (held.append(token), b"")[1]
    for i in range(70):
        with pytest.raises(InvalidMessage):  # the empty "reply" does not open: fine here
            device.send({"n": i})
    device._transport = real
    newest, oldest = held[-1], held[0]
    ctx.messages.handle(held[-2])
    ctx.messages.handle(newest)
    ctx.messages.handle(held[-5])  # out of order, inside the 64-wide window
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(oldest)  # 69 behind the newest: outside the window


def test_expired_and_future_messages_are_refused(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    held = []
    device._transport = lambda url, token: (held.append(token), b"")[1]
    with pytest.raises(InvalidMessage):
        device.send({"n": 1})
    clock.advance(device.message_ttl + 1)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(held[0])
    clock.advance(-2 * (device.message_ttl + 1) - 3600)
    with pytest.raises(InvalidMessage):
        device.send({"n": 2})
    clock.advance(device.message_ttl + 1 + 3600)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(held[1])  # iat an hour in the server's future


def test_server_kinds_are_refused_from_a_device(device: Device, ctx: ServerContext) -> None:
    st = device.state
    message = Message(
        typ=MessageType.ACK,
        iss=st.device_id,
        aud=st.server_id,
        iat=int(device.clock()),
        exp=int(device.clock()) + 60,
        jti="x" * 16,
        seq=10_000,
        body={"status": "stored"},
        in_reply_to="y" * 16,
    )
    token = seal(
        message,
        signing_key=device._signing,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=system_random,
    )
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)


def test_message_for_another_audience_is_refused(device: Device, ctx: ServerContext) -> None:
    """Surreptitious forwarding: inner aud must be this server."""
    st = device.state
    message = Message(
        typ=MessageType.TELEMETRY,
        iss=st.device_id,
        aud="https://some-other-server.example",
        iat=int(device.clock()),
        exp=int(device.clock()) + 60,
        jti="z" * 16,
        seq=10_001,
        body={"readings": {}},
    )
    token = seal(
        message,
        signing_key=device._signing,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=system_random,
    )
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)


def test_other_device_cannot_speak_for_a_device(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock, device: Device
) -> None:
    mallory = enrol(ctx, "meter-2", tmp_path / "meter-2.json", clock)
    message = Message(
        typ=MessageType.TELEMETRY,
        iss="meter-1",  # claims to be meter-1, signs with meter-2's key
        aud=mallory.server_id,
        iat=int(clock()),
        exp=int(clock()) + 60,
        jti="m" * 16,
        seq=1,
        body={"readings": {}},
    )
    token = seal(
        message,
        signing_key=mallory._signing,
        recipient_key=mallory._server_enc,
        suite=mallory._suite,
        random=system_random,
    )
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)


def test_command_round_trip_and_result_binding(device: Device, ctx: ServerContext) -> None:
    cid = ctx.store.queue_command("meter-1", {"op": "set-interval", "seconds": 60}, now=1.0)
    command = device.poll()
    assert command is not None and command.cid == cid
    assert command.body == {"cid": cid, "op": "set-interval", "args": {"seconds": 60}}
    ack = device.respond(command, {"applied": True})
    assert ack.body == {"status": "recorded"}
    record = ctx.store.get_command(cid)
    assert record is not None and record.result is not None
    assert record.result["result"] == {"applied": True}
    assert device.poll() is None


def test_result_must_answer_the_delivery(device: Device, ctx: ServerContext) -> None:
    cid = ctx.store.queue_command("meter-1", {"op": "reboot"}, now=1.0)
    first = device.poll()
    assert first is not None and first.cid == cid
    with pytest.raises(MessageRejected):  # irt names no delivery of this command
        device._exchange(
            MessageType.COMMAND_RESULT, {"cid": cid, "ok": True}, {MessageType.ACK}, irt="f" * 32
        )
    device.respond(first, {"ok": 1})


def test_result_for_an_unknown_command_is_refused(device: Device) -> None:
    with pytest.raises(ValueError, match="no command"):
        device.respond("not-a-command", {})


def test_deregistered_device_is_refused(device: Device) -> None:
    device.deregister()
    with pytest.raises(MessageRejected):
        device.send({"n": 1})


def test_retransmission_with_the_same_mid_is_stored_once(
    device: Device, ctx: ServerContext
) -> None:
    """A lost reply: the device re-seals (new seq and jti, same mid); stored once."""
    real = transport(device)
    calls = {"n": 0}

    def lossy(url: str, token: bytes) -> bytes:
        from hatchway.device import TransportError

        calls["n"] += 1
        reply = real(url, token)
        if calls["n"] == 1:
            raise TransportError("reply lost")
        return reply

    device._transport = lossy
    device.retry_for = 5
    ack = device.send({"kwh": 1})
    assert ack.body == {"status": "duplicate"}
    assert calls["n"] == 2
    assert ctx.store.count_messages("meter-1") == 1


def test_sequence_numbers_survive_a_crash(device: Device, ctx: ServerContext) -> None:
    for i in range(5):
        device.send({"n": i})
    used = device.state.seq_next
    # Crash: the in-memory state is lost without a final save (the dying process's
    # lock goes with it); reload from disk.
    device._file.close()
    reloaded = StateFile.load(device.state_path)
    assert reloaded.state.seq_next >= used
    again = Device(reloaded, transport=transport(device), clock=device.clock, retry_for=0)
    again.send({"n": 99})  # accepted: its seq was never used


def test_state_file_is_private(device: Device) -> None:
    assert device.state_path.stat().st_mode & 0o777 == 0o600


def test_state_file_serves_one_process(device: Device) -> None:
    from hatchway.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="in use by another process"):
        StateFile.load(device.state_path)
    device.close()
    StateFile.load(device.state_path).close()  # free once the device is closed
