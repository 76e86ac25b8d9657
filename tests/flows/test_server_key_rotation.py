"""Issue 9 "Key rotation", server keys: a new generation, announced under the old key.

``rotate_server_keys`` adds a generation; the server signs with it, devices learn it
in a ``SERVER_KEYS`` reply signed by the key they trust and switch; what was sealed to
the old key opens until the overlap ends, then nothing does. Replays stay refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hatchway.device import Device, MessageRejected
from hatchway.errors import InvalidMessage
from hatchway.flows.keyring import ServerKeyring, rotate_server_keys
from hatchway.msgsec import (
    Message,
    MessageType,
    Suite,
    generate_signing_key,
    seal,
)
from hatchway.msgsec.rotation import server_keys_body
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from tests.flows.conftest import DirectTransport, enrol

WEEK = 7 * 24 * 3600


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    return enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)


def rotate(ctx: ServerContext, clock: FrozenClock, overlap: float = WEEK) -> int:
    generation = rotate_server_keys(
        ctx.store, ctx.identity, now=clock(), overlap=overlap, random=system_random
    )
    ctx.messages.keyring.refresh(clock())
    return generation


def held(device: Device) -> bytes:
    """Seal telemetry as the device would, without sending it."""
    box: list[bytes] = []
    real = device._transport
    device._transport = lambda url, token: (box.append(token), b"")[1]
    with pytest.raises(InvalidMessage):
        device.send({"held": True})
    device._transport = real
    return box[0]


def test_devices_learn_the_new_keys_under_the_old_one_and_switch(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    old_kid = device._server.verifying_key.kid
    assert rotate(ctx, clock) == 2
    current = ctx.messages.keyring.current
    notice = device.send({"n": 1})
    assert notice.typ is MessageType.SERVER_KEYS and notice.body["status"] == "stored"
    assert device._server.verifying_key.kid == current.signing.kid != old_kid
    assert device._server_enc.kid == current.decryption.kid
    saved = json.loads(device.state_path.read_text())
    assert [k["kid"] for k in saved["server_keys"]["keys"]] == [
        current.signing.kid,
        current.decryption.kid,
    ]
    ack = device.send({"n": 2})  # sealed to the new key, answered under the new key
    assert ack.typ is MessageType.ACK
    assert ctx.store.count_messages("meter-1") == 2


def test_the_old_key_opens_until_the_overlap_ends(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    rotate(ctx, clock, overlap=3600)
    clock.advance(3590)
    ctx.messages.handle(held(device))  # the device still seals to generation 1
    clock.advance(11)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(held(device))  # generation 1 retired at 3600 s
    assert ctx.store.count_messages("meter-1") == 1


def test_a_device_still_on_the_old_keys_after_the_overlap_is_refused(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    rotate(ctx, clock, overlap=60)
    clock.advance(61)
    ctx.messages.keyring.refresh(clock())
    with pytest.raises(MessageRejected):  # it must re-enrol (docs/key-rotation.md)
        device.send({"n": 1})
    assert ctx.store.count_messages("meter-1") == 0


def test_replays_stay_refused_across_the_switch(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    device.send({"n": 1})
    before = transport(device).sent[-1]
    rotate(ctx, clock)
    device.send({"n": 2})  # switches
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(before)  # sealed to the old key, inside the overlap
    after = transport(device).sent[-1]
    assert device.send({"n": 3}).typ is MessageType.ACK
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(after)
    assert ctx.store.count_messages("meter-1") == 3


def test_after_switching_the_device_refuses_the_old_server_key(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    old = ctx.messages.keyring.current
    rotate(ctx, clock)
    device.send({"n": 1})  # switches
    request_jti = "r" * 32
    now = int(clock())
    downgrade = Message(
        typ=MessageType.ACK,
        iss=device.server_id,
        aud=device.device_id,
        iat=now,
        exp=now + 60,
        jti="d" * 32,
        seq=10_000,
        body={"status": "stored"},
        in_reply_to=request_jti,
    )
    token = seal(
        downgrade,
        signing_key=old.signing,
        recipient_key=device._decryption.public(),
        suite=Suite(sign=old.signing.alg),
        random=system_random,
    )
    with pytest.raises(InvalidMessage):
        device._open_reply(token, {request_jti}, {MessageType.ACK})


def test_a_forged_key_announcement_is_refused(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    mallory = generate_signing_key()
    evil_enc = ctx.messages.keyring.current.decryption.public()
    now = int(clock())
    request_jti = "q" * 32
    forged = Message(
        typ=MessageType.SERVER_KEYS,
        iss=device.server_id,
        aud=device.device_id,
        iat=now,
        exp=now + 60,
        jti="f" * 32,
        seq=10_000,
        body=server_keys_body(mallory.public(), evil_enc, retires_at=now, status="stored"),
        in_reply_to=request_jti,
    )
    token = seal(
        forged,
        signing_key=mallory,
        recipient_key=device._decryption.public(),
        suite=Suite(sign=mallory.alg),
        random=system_random,
    )
    before = device.state.server_keys
    with pytest.raises(InvalidMessage):
        device._open_reply(token, {request_jti}, {MessageType.ACK})
    assert device.state.server_keys == before


def test_jwks_serves_both_generations_with_the_retirement(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    first = ctx.messages.keyring.current
    rotate(ctx, clock, overlap=3600)
    current = ctx.messages.keyring.current
    jwks = ctx.messages.keyring.jwk_set(clock())
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids[:4] == [
        current.signing.kid,
        current.decryption.kid,
        first.signing.kid,
        first.decryption.kid,
    ]
    assert jwks["hatchway_retires_at"] == {
        first.signing.kid: int(clock()) + 3600,
        first.decryption.kid: int(clock()) + 3600,
    }
    later = ctx.messages.keyring.jwk_set(clock() + 3601)
    # The token key (generation 1's signing key) stays for first and access tokens.
    assert [k["kid"] for k in later["keys"]] == [
        current.signing.kid,
        current.decryption.kid,
        first.signing.kid,
    ]
    assert "hatchway_retires_at" not in later


def test_new_devices_enrol_with_the_current_keys(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    rotate(ctx, clock)
    fresh = enrol(ctx, "meter-9", tmp_path / "meter-9.json", clock)
    assert fresh._server.verifying_key.kid == ctx.messages.keyring.current.signing.kid
    assert fresh.send({"n": 1}).typ is MessageType.ACK


def test_another_replica_learns_the_rotation_from_the_store(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    replica = ServerKeyring(
        ctx.store, ctx.identity, clock=clock, random=system_random, refresh_interval=5
    )
    rotate_server_keys(ctx.store, ctx.identity, now=clock(), overlap=WEEK, random=system_random)
    assert replica.current.generation == 1
    clock.advance(5)
    assert replica.due(clock())
    replica.refresh(clock())
    assert replica.current.generation == 2
    assert (
        replica.current.signing.kid
        == ServerKeyring(
            ctx.store, ctx.identity, clock=clock, random=system_random
        ).current.signing.kid
    )


def test_the_overlap_is_bounded(ctx: ServerContext, clock: FrozenClock) -> None:
    with pytest.raises(ValueError):
        rotate_server_keys(ctx.store, ctx.identity, now=clock(), overlap=-1, random=system_random)


def transport(device: Device) -> DirectTransport:
    t = device._transport
    assert isinstance(t, DirectTransport)
    return t


def test_a_replica_with_other_message_keys_cannot_open_the_generations(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    from hatchway.errors import ConfigurationError
    from hatchway.server.datadir import ensure_data_dir

    stranger = ensure_data_dir(tmp_path / "other-data-dir")
    with pytest.raises(ConfigurationError, match=r"message-keys\.json"):
        ServerKeyring(ctx.store, stranger, clock=clock, random=system_random)


def test_a_key_another_replica_rotated_to_is_read_at_once_async(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    """The device switched through another replica; this one has not re-read yet."""
    import asyncio

    rotate_server_keys(ctx.store, ctx.identity, now=clock(), overlap=WEEK, random=system_random)
    other = ServerKeyring(ctx.store, ctx.identity, clock=clock, random=system_random)
    device._trust_server(
        {
            "keys": [
                other.current.signing.public().to_jwk(),
                other.current.decryption.public().to_jwk(),
            ]
        }
    )
    assert ctx.messages.keyring.current.generation == 1  # not re-read: refresh not due
    token = held(device)
    reply = asyncio.run(ctx.messages.handle_async(token))
    assert reply and ctx.messages.keyring.current.generation == 2
    assert ctx.store.count_messages("meter-1") == 1


def test_unknown_key_ids_reread_the_store_at_most_once_a_second(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    keyring = ctx.messages.keyring
    forged = b"eyJraWQiOiJub3BlIn0.x.y.z.w"  # protected header {"kid":"nope"}
    assert keyring.may_refresh_for(forged, clock())
    assert not keyring.refresh_for(forged, clock())
    assert not keyring.may_refresh_for(forged, clock() + 0.5)
    assert not keyring.refresh_for(forged, clock() + 0.5)
    assert keyring.may_refresh_for(forged, clock() + 1.0)
    from hatchway.msgsec._codec import b64e, dumps

    known = b64e(dumps({"kid": keyring.current.decryption.kid}))
    assert not keyring.may_refresh_for(known + b".x.y.z.w", clock() + 5)


def test_a_periodic_refresh_reads_the_store_once_however_many_callers_see_it_due(
    ctx: ServerContext, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = ServerKeyring(
        ctx.store, ctx.identity, clock=clock, random=system_random, refresh_interval=5
    )
    reads = 0
    list_keys = ctx.store.list_server_keys

    def counted() -> list[Any]:
        nonlocal reads
        reads += 1
        return list(list_keys())

    monkeypatch.setattr(ctx.store, "list_server_keys", counted)
    clock.advance(5)
    # Every thread (and every MQTT uplink in flight) sees the snapshot fall due at once.
    assert keyring.due(clock())
    for _ in range(8):
        keyring.refresh(clock(), force=False)
    assert reads == 1 and not keyring.due(clock())
    keyring.refresh(clock())  # a forced refresh (refresh_for, the CLI) always re-reads
    assert reads == 2
