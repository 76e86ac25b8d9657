"""Issue 9 "Key rotation", device keys: rotated over the sealed channel, attacked.

The device proves possession of the new keys (a JWS by the new signing key) inside a
message signed by the old ones; the server re-issues the certificate, accepts both
keys for ``device_key_overlap`` seconds and then only the new ones. Sequence numbers
and the replay window carry across the switch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hatchway.device import Device, MessageRejected, StateFile, TransportError
from hatchway.device.rotation import PENDING_KEY, PendingRotation
from hatchway.errors import InvalidMessage
from hatchway.msgsec import (
    Message,
    MessageType,
    SignAlg,
    SigningKey,
    generate_decryption_key,
    generate_signing_key,
    seal,
)
from hatchway.msgsec.rotation import make_proof
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from tests.flows.conftest import DirectTransport, enrol

DAY = 24 * 3600


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    return enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)


def sealed(
    device: Device,
    kind: MessageType,
    body: dict[str, Any],
    *,
    signing_key: SigningKey | None = None,
    seq: int | None = None,
) -> bytes:
    """A message from ``device`` as an attacker (or a stale copy of it) could seal it."""
    now = int(device.clock())
    message = Message(
        typ=kind,
        iss=device.device_id,
        aud=device.server_id,
        iat=now,
        exp=now + 60,
        jti=system_random(16).hex(),
        seq=device._file.next_seq() if seq is None else seq,
        body=body,
    )
    return seal(
        message,
        signing_key=signing_key or device._signing,
        recipient_key=device._server_enc,
        suite=device._suite,
        random=system_random,
    )


def rotate_body(device: Device, **overrides: Any) -> dict[str, Any]:
    """A well-formed KEY_ROTATE body for ``device``, with ``overrides`` applied."""
    signing, decryption = generate_signing_key(), generate_decryption_key()
    mid = system_random(16).hex()
    proof = make_proof(
        overrides.pop("proof_key", signing),
        decryption.public(),
        device_id=overrides.pop("proof_device", device.device_id),
        server_id=overrides.pop("proof_server", device.server_id),
        old_kid=device._signing.kid,
        mid=overrides.pop("proof_mid", mid),
    )
    body = {
        "mid": mid,
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": proof,
    }
    body.update(overrides)
    return body


def spki(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def test_rotation_swaps_keys_and_reissues_the_certificate(
    device: Device, ctx: ServerContext
) -> None:
    old_kid, old_cert = device._signing.kid, device.state.device_certificate
    device.send({"n": 1})
    reply = device.rotate_keys()
    assert reply.typ is MessageType.KEY_ROTATED
    assert device._signing.kid != old_kid and device._signing.kid == reply.body["signing_kid"]
    saved = json.loads(device.state_path.read_text())
    assert saved["signing_key"]["kid"] == device._signing.kid
    assert PENDING_KEY not in saved.get("extra", {})
    cert = x509.load_pem_x509_certificate(saved["device_certificate"].encode())
    assert spki(cert.public_key()) == spki(device._signing.public().key)
    assert saved["device_certificate"] != old_cert
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == device._signing.kid
    assert record.certificate_pem == saved["device_certificate"]
    assert device.send({"n": 2}).body == {"status": "stored"}
    assert ctx.store.count_messages("meter-1") == 3  # two readings and the rotation


def test_old_key_works_during_the_overlap_and_not_after(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    old = device._signing
    device.rotate_keys()
    clock.advance(DAY - 10)
    ctx.messages.handle(sealed(device, MessageType.TELEMETRY, {"readings": {}}, signing_key=old))
    clock.advance(20)  # past device_key_overlap (24 h by default)
    late = sealed(device, MessageType.TELEMETRY, {"readings": {}}, signing_key=old)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(late)
    assert device.send({"n": 1}).body == {"status": "stored"}  # the new key still works


def test_a_message_replayed_under_the_old_key_is_refused(
    device: Device, ctx: ServerContext
) -> None:
    device.send({"n": 1})
    before = transport(device).sent[-1]
    device.rotate_keys()
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(before)  # old key, still in the overlap: the seq was seen
    count = ctx.store.count_messages("meter-1")
    device.send({"n": 2})
    assert ctx.store.count_messages("meter-1") == count + 1


def test_a_replayed_rotation_is_refused(device: Device, ctx: ServerContext) -> None:
    device.rotate_keys()
    rotate_token = transport(device).sent[-1]
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(rotate_token)


def test_a_rotation_with_a_lost_reply_finishes_with_the_same_certificate(
    device: Device, ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    real = transport(device)

    def lose_reply(url: str, token: bytes) -> bytes:
        real(url, token)
        raise TransportError("connection reset after the server answered")

    device._transport = lose_reply
    with pytest.raises(TransportError):
        device.rotate_keys()
    pending = PendingRotation.load(device._file)
    assert pending is not None  # the new keys were saved before the send
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == pending.signing.kid  # the server rotated
    first_cert = record.certificate_pem
    device.close()
    # The process "restarts": the pending rotation is resumed, same mid, old key.
    again = Device(StateFile.load(tmp_path / "meter-1.json"), transport=real, clock=clock)
    # Before it finishes, its messages still work: signed by the old key, answered to
    # the new encryption key, which the pending rotation lets it open.
    assert again.send({"n": 0}).body == {"status": "stored"}
    reply = again.rotate_keys()
    assert reply.body["certificate"] == first_cert
    assert again._signing.kid == pending.signing.kid
    assert again.send({"n": 1}).body == {"status": "stored"}


def test_a_lost_rotation_reply_can_be_fetched_after_the_overlap(
    device: Device, ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    real = transport(device)
    device._transport = lambda url, token: (real(url, token), b"")[1]  # reply lost
    with pytest.raises(InvalidMessage):
        device.rotate_keys()
    device.close()
    clock.advance(2 * DAY)  # the old key has retired meanwhile
    again = Device(StateFile.load(tmp_path / "meter-1.json"), transport=real, clock=clock)
    assert again.rotate_keys().typ is MessageType.KEY_ROTATED  # answered under the new key
    assert again.send({"n": 1}).body == {"status": "stored"}


@pytest.mark.parametrize(
    "attack",
    [
        "proof by the old key",
        "proof by another key",
        "proof for another rotation",
        "proof for another device",
        "proof for another server",
        "proof not a JWS",
        "signing downgraded to EdDSA",
        "encryption curve changed",
        "same keys again",
        "private key sent",
        "kid not the thumbprint",
        "unknown JWK member",
    ],
)
def test_bad_rotations_are_refused_and_leave_no_trace(
    device: Device, ctx: ServerContext, attack: str
) -> None:
    old_record = ctx.store.get_device("meter-1")
    count = ctx.store.count_messages("meter-1")
    if attack == "proof by the old key":
        body = rotate_body(device, proof_key=device._signing)
    elif attack == "proof by another key":
        body = rotate_body(device, proof_key=generate_signing_key())
    elif attack == "proof for another rotation":
        body = rotate_body(device, proof_mid="another-mid")
    elif attack == "proof for another device":
        body = rotate_body(device, proof_device="meter-2")
    elif attack == "proof for another server":
        body = rotate_body(device, proof_server="https://evil.example")
    elif attack == "proof not a JWS":
        body = rotate_body(device, proof="a.b")
    elif attack == "signing downgraded to EdDSA":
        ed = generate_signing_key(SignAlg.EDDSA)
        body = rotate_body(device, proof_key=ed, signing_key=ed.public().to_jwk())
    elif attack == "encryption curve changed":
        body = rotate_body(device)
        x = generate_decryption_key("X25519")
        body["encryption_key"] = x.public().to_jwk()
    elif attack == "same keys again":
        body = rotate_body(device)
        body["signing_key"] = device._signing.public().to_jwk()
    elif attack == "private key sent":
        body = rotate_body(device)
        body["encryption_key"] = generate_decryption_key().to_jwk(private=True)
    elif attack == "kid not the thumbprint":
        body = rotate_body(device)
        body["signing_key"] = {**body["signing_key"], "kid": "chosen-kid"}
    else:
        body = rotate_body(device)
        body["signing_key"] = {**body["signing_key"], "x5u": "https://evil.example/k"}
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(sealed(device, MessageType.KEY_ROTATE, body))
    assert ctx.store.get_device("meter-1") == old_record
    assert ctx.store.count_messages("meter-1") == count
    assert device.send({"n": 1}).body == {"status": "stored"}  # the old keys still work


def test_a_retiring_key_cannot_start_another_rotation(device: Device, ctx: ServerContext) -> None:
    old = device._signing
    device.rotate_keys()
    body = rotate_body(device)
    # A thief of the old key tries to fork the device onto keys of its own.
    token = sealed(device, MessageType.KEY_ROTATE, body, signing_key=old)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == device._signing.kid


def test_a_retiring_key_cannot_deregister_the_device(device: Device, ctx: ServerContext) -> None:
    old = device._signing
    device.rotate_keys()
    token = sealed(device, MessageType.DEREGISTER, {"reason": "stolen"}, signing_key=old)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.status.value == "enrolled"
    assert device.deregister().body == {"status": "deregistered"}  # the new key may


def test_rotating_twice_retires_the_first_key_at_once(device: Device, ctx: ServerContext) -> None:
    first = device._signing
    device.rotate_keys()
    device.rotate_keys()
    token = sealed(device, MessageType.TELEMETRY, {"readings": {}}, signing_key=first)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(token)
    assert device.send({"n": 1}).body == {"status": "stored"}


def test_another_devices_rotation_mid_does_not_answer(
    device: Device, ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    other = enrol(ctx, "meter-2", tmp_path / "meter-2.json", clock)
    device.rotate_keys()
    pending_mid = ctx.store.list_messages("meter-1")[-1].mid
    assert pending_mid is not None
    body = rotate_body(other, mid=pending_mid, proof_mid=pending_mid)
    reply_token = ctx.messages.handle(sealed(other, MessageType.KEY_ROTATE, body))
    assert reply_token  # meter-2 rotates its own keys; meter-1's rotation is not touched
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.signing_jwk is not None
    assert record.signing_jwk["kid"] == device._signing.kid


def test_a_device_that_was_reset_loses_its_old_key_too(device: Device, ctx: ServerContext) -> None:
    old = device._signing
    device.rotate_keys()
    ctx.enrolment.provision("meter-1", force=True)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(
            sealed(device, MessageType.TELEMETRY, {"readings": {}}, signing_key=old)
        )
    with pytest.raises(MessageRejected):
        device.send({"n": 1})


def transport(device: Device) -> DirectTransport:
    t = device._transport
    assert isinstance(t, DirectTransport)
    return t


@pytest.mark.parametrize("path", ["thread", "event loop"])
def test_a_replica_that_cached_the_old_key_looks_again(
    device: Device, ctx: ServerContext, clock: FrozenClock, path: str
) -> None:
    """Replica B cached the device's key before it rotated through replica A: a message
    still under the old key, delivered to B during the overlap, is stored, not lost."""
    import asyncio

    replica = ServerContext.create(ctx.settings, clock=clock, random=system_random)
    try:
        old = device._signing
        held = sealed(device, MessageType.TELEMETRY, {"readings": {"held": 1}}, signing_key=old)
        replica.messages.handle(sealed(device, MessageType.TELEMETRY, {"readings": {}}))
        device.rotate_keys()  # through ctx: "replica A"
        count = ctx.store.count_messages("meter-1")
        if path == "thread":
            replica.messages.handle(held)
        else:
            asyncio.run(replica.messages.handle_async(held))
        assert ctx.store.count_messages("meter-1") == count + 1
        with pytest.raises(InvalidMessage):
            replica.messages.handle(held)  # and only once
    finally:
        replica.close()


def test_the_replaced_certificate_goes_on_the_crl_as_superseded(
    device: Device, ctx: ServerContext
) -> None:
    from hatchway.flows.deregistration import RevocationService

    before = ctx.store.get_device("meter-1")
    assert before is not None and before.certificate_pem is not None
    old_cert = x509.load_pem_x509_certificate(before.certificate_pem.encode())
    device.rotate_keys()
    new_cert = x509.load_pem_x509_certificate(device.state.device_certificate.encode())
    entries = {c.serial: c.code for c in ctx.store.revoked_certificates()}
    assert entries == {old_cert.serial_number: "superseded"}
    service = RevocationService(store=ctx.store, ca=ctx.identity.ca, clock=ctx.messages.clock)
    crl = x509.load_der_x509_crl(service.publish().der)
    entry = crl.get_revoked_certificate_by_serial_number(old_cert.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded
    assert crl.get_revoked_certificate_by_serial_number(new_cert.serial_number) is None
    # The retransmitted rotation (same mid) adds nothing.
    assert len(ctx.store.revoked_certificates()) == 1
