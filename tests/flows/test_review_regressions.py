"""Regressions for defects an adversarial review found in the enrolment and message flows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hatchway.config import Settings, validate
from hatchway.device import Command, Device, MessageRejected, TransportError
from hatchway.device.enrol import _proof
from hatchway.errors import ConfigurationError, InvalidMessage
from hatchway.flows.enrolment import EnrolmentRejected
from hatchway.msgsec import MessageType, generate_decryption_key, generate_signing_key
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from tests.flows.conftest import DirectTransport, enrol


def _hold(device: Device) -> list[bytes]:
    """Swap in a transport that keeps tokens undelivered; returns where they go."""
    held: list[bytes] = []
    device._transport = lambda url, token: (held.append(token), b"")[1]
    return held


def test_key_revoked_by_reprovision_is_refused_at_once(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    old = enrol(ctx, "meter-1", tmp_path / "old.json", clock)
    old.send({"n": 1})  # the old key is now in the server's key cache
    real = old._transport
    held = _hold(old)
    with pytest.raises(InvalidMessage):
        old.send({"n": 2})
    old._transport = real
    # The operator resets the device and the real one enrols with new keys.
    secret = ctx.enrolment.provision("meter-1", force=True)
    first = ctx.enrolment.issue_first_token("meter-1", secret)
    signing, decryption = generate_signing_key(), generate_decryption_key()
    ctx.enrolment.exchange_keys(
        first.token,
        {
            "signing_key": signing.public().to_jwk(),
            "encryption_key": decryption.public().to_jwk(),
            "proof": _proof(signing, decryption, "meter-1", ctx.settings.issuer, first.challenge),
        },
    )
    with pytest.raises(InvalidMessage):  # the stolen old key no longer gets in
        ctx.messages.handle(held[0])


def test_first_token_from_a_rotated_secret_is_refused(ctx: ServerContext) -> None:
    leaked = ctx.enrolment.provision("meter-1")
    stolen = ctx.enrolment.issue_first_token("meter-1", leaked)
    ctx.enrolment.provision("meter-1", force=True)
    signing, decryption = generate_signing_key(), generate_decryption_key()
    request = {
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": _proof(signing, decryption, "meter-1", ctx.settings.issuer, stolen.challenge),
    }
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(stolen.token, request)
    assert refused.value.public == "invalid_token"


def _keys_with_kid(ctx: ServerContext, first: Any, signing_kid: str) -> dict[str, Any]:
    signing = replace(generate_signing_key(), kid=signing_kid)
    decryption = generate_decryption_key()
    return {
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": _proof(signing, decryption, "meter-2", ctx.settings.issuer, first.challenge),
    }


def test_a_device_cannot_choose_its_key_id(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    victim = enrol(ctx, "meter-1", tmp_path / "victim.json", clock)
    first = ctx.enrolment.issue_first_token("meter-2", ctx.enrolment.provision("meter-2"))
    squat = _keys_with_kid(ctx, first, victim._signing.kid)
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, squat)
    assert refused.value.public == "invalid_request"


def test_deeply_nested_proof_is_refused_not_a_crash(ctx: ServerContext) -> None:
    from joserfc import jws

    from hatchway.tokens import import_jwk

    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    signing, decryption = generate_signing_key(), generate_decryption_key()
    deep = "[" * 1500 + "]" * 1500
    proof = jws.serialize_compact(
        {"alg": "ES256", "typ": "hatchway-pop+jwt"},
        deep,
        import_jwk(signing.to_jwk(private=True)),
        algorithms=["ES256"],
    )
    request = {
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": proof,
    }
    with pytest.raises(EnrolmentRejected):
        ctx.enrolment.exchange_keys(first.token, request)


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    return enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)


def test_overlong_mid_is_the_uniform_refusal(device: Device, ctx: ServerContext) -> None:
    held = _hold(device)
    with pytest.raises(InvalidMessage):
        device._exchange(
            MessageType.TELEMETRY, {"readings": {}, "mid": "m" * 300}, {MessageType.ACK}
        )
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(held[0])
    assert ctx.store.count_messages("meter-1") == 0


def test_expired_jti_entries_are_purged_by_traffic(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    from sqlalchemy import func, select

    from hatchway.store.schema import seen_jti

    for i in range(5):
        device.send({"n": i})
    clock.advance(3600)
    device.send({"n": 99})
    with ctx.store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(seen_jti)) == 1


def test_refused_result_leaves_no_trace(device: Device, ctx: ServerContext) -> None:
    ctx.store.queue_command("meter-1", {"op": "reboot"}, now=1.0)
    other = ctx.store.queue_command("meter-1", {"op": "other"}, now=1.0)
    first = device.poll()
    before = ctx.store.count_messages("meter-1")
    assert first is not None
    with pytest.raises(MessageRejected):  # answers `other` with `first`'s delivery
        device.respond(Command(cid=other, body=first.body, message=first.message), {"ok": 1})
    assert ctx.store.count_messages("meter-1") == before


def test_result_lost_to_a_store_failure_is_recorded_on_retransmission(
    device: Device, ctx: ServerContext
) -> None:
    cid = ctx.store.queue_command("meter-1", {"op": "reboot"}, now=1.0)
    command = device.poll()
    assert command is not None
    real_record = ctx.store.record_command_result
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        real_record(*args, **kwargs)

    ctx.store.record_command_result = flaky  # type: ignore[method-assign]
    direct = device._transport
    assert isinstance(direct, DirectTransport)

    def as_http(url: str, token: bytes) -> bytes:
        try:
            return direct(url, token)
        except RuntimeError as exc:  # what a 500 looks like to the device
            raise TransportError(str(exc)) from None

    device._transport = as_http
    device.retry_for = 5
    ack = device.respond(command, {"done": True})
    assert ack.body == {"status": "duplicate"}
    record = ctx.store.get_command(cid)
    assert record is not None and record.result is not None
    assert record.result["result"] == {"done": True}


def test_shrinking_the_replay_window_does_not_strand_devices(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    for i in range(40):
        device.send({"n": i})
    narrow = replace(ctx.settings, replay_window=8)
    restarted = ServerContext.create(narrow, clock=clock, random=system_random)
    try:
        device._transport = DirectTransport(restarted)
        device.send({"n": 40})
    finally:
        restarted.close()


@pytest.mark.parametrize("ttl", [0, -5, 601, 10_000])
def test_message_ttl_is_validated(ttl: int) -> None:
    with pytest.raises(ConfigurationError, match="message_ttl"):
        validate(Settings(message_ttl=ttl))
