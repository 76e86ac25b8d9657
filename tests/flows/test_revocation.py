"""Operator-side revocation (issue 9, fig. 7), attacked at the flow level.

A real ServerContext (SQLite, data dir, dev CA) and devices on the real SDK, talking
through the message service directly: the revoked device's next message gets the
sealed notice (the same bytes for a retransmission), the SDK deletes its keys and goes
quiet, and everything after that is refused, replays of pre-revocation tokens and a
clone of the device's keys included. Re-enrolment waits for ``provision --force``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from hatchway.device import Device, DeviceRevoked, MessageRejected, StateFile, TransportError
from hatchway.device.enrol import _proof
from hatchway.errors import InvalidMessage
from hatchway.flows.deregistration import NOTICE_GRACE, RevocationService
from hatchway.flows.enrolment import EnrolmentRejected
from hatchway.msgsec import generate_decryption_key, generate_signing_key
from hatchway.pki import RevocationCode
from hatchway.runtime import FrozenClock
from hatchway.server.context import ServerContext
from hatchway.store import DeviceExists, DeviceStatus
from tests.flows.conftest import DirectTransport, enrol


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    return enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)


def revocations(ctx: ServerContext) -> RevocationService:
    return RevocationService(store=ctx.store, ca=ctx.identity.ca, clock=ctx.messages.clock)


def sent(device: Device) -> list[bytes]:
    transport = device._transport
    assert isinstance(transport, DirectTransport)
    return transport.sent


def clone(device: Device, path: Path, clock: FrozenClock) -> Device:
    """A second holder of the same keys (a copied state file), as a thief would have."""
    shutil.copy(device.state_path, path)
    transport = DirectTransport(sent_to(device))
    return Device(StateFile.load(path), transport=transport, clock=clock, retry_for=0)


def sent_to(device: Device) -> ServerContext:
    transport = device._transport
    assert isinstance(transport, DirectTransport)
    return transport.ctx


def test_next_message_gets_the_notice_and_the_device_deletes_its_keys(
    device: Device, ctx: ServerContext
) -> None:
    device.send({"n": 1})
    done = revocations(ctx).revoke("meter-1", reason="stolen")
    assert done.new and done.serial is not None
    with pytest.raises(DeviceRevoked) as raised:
        device.send({"n": 2})
    assert raised.value.reason == "stolen" and raised.value.device_id == "meter-1"
    # The state file is a keyless tombstone now.
    text = device.state_path.read_text()
    assert '"d"' not in text and "signing_key" not in text
    assert json.loads(text)["revoked"]["reason"] == "stolen"
    # It never sends again, and cannot be loaded as a device.
    before = len(sent(device))
    with pytest.raises(DeviceRevoked):
        device.poll()
    assert len(sent(device)) == before
    device.close()
    assert "signing_key" not in device.state_path.read_text()  # close wrote nothing back
    with pytest.raises(DeviceRevoked):
        Device.load(device.state_path)
    # Nothing of the revoked device's message was stored.
    assert ctx.store.count_messages("meter-1") == 1
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.status is DeviceStatus.REVOKED


def test_after_the_notice_everything_is_refused(
    device: Device, ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    device.send({"n": 1})
    old_token = sent(device)[-1]
    thief = clone(device, tmp_path / "thief.json", clock)
    revocations(ctx).revoke("meter-1", reason="stolen")
    with pytest.raises(DeviceRevoked):
        device.poll()
    noticed_token = sent(device)[-1]
    # A pre-revocation token, the token that got the notice, and the clone's messages.
    for token in (old_token, noticed_token):
        with pytest.raises(InvalidMessage):
            ctx.messages.handle(token)
    with pytest.raises(MessageRejected):
        thief.send({"n": 2})
    with pytest.raises(MessageRejected):
        thief.deregister("please")
    assert ctx.store.count_messages("meter-1") == 1
    # The clone was refused, not told: its keys are where they were.
    assert "signing_key" in (tmp_path / "thief.json").read_text()


def test_a_replayed_old_token_does_not_take_the_notice(device: Device, ctx: ServerContext) -> None:
    device.send({"n": 1})
    old_token = sent(device)[-1]
    revocations(ctx).revoke("meter-1", reason="retired", code=RevocationCode.CESSATION_OF_OPERATION)
    with pytest.raises(InvalidMessage):
        ctx.messages.handle(old_token)
    with pytest.raises(DeviceRevoked, match="retired"):
        device.send({"n": 2})


def test_a_retransmission_gets_the_same_notice(device: Device, ctx: ServerContext) -> None:
    replies: list[bytes] = []
    real = device._transport

    def lossy(url: str, token: bytes) -> bytes:
        reply = real(url, token)
        replies.append(reply)
        if len(replies) == 1:
            raise TransportError("reply lost")  # the device re-seals, same mid
        return reply

    device._transport = lossy
    device.retry_for = 5.0
    revocations(ctx).revoke("meter-1", reason="stolen")
    with pytest.raises(DeviceRevoked):
        device.send({"n": 1})
    assert len(replies) == 2 and replies[0] == replies[1]


def test_a_cached_sender_on_the_event_loop_gets_the_notice(
    device: Device, ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    device.send({"n": 1})  # the server caches the device's key
    revocations(ctx).revoke("meter-1", reason="stolen")

    def on_loop(url: str, token: bytes) -> bytes:
        try:
            return asyncio.run(ctx.messages.handle_async(token))
        except InvalidMessage:
            raise MessageRejected("refused") from None

    device._transport = on_loop
    with pytest.raises(DeviceRevoked):
        device.send({"n": 2})
    assert ctx.store.count_messages("meter-1") == 1


def test_after_the_grace_a_device_never_told_is_only_refused(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    revocations(ctx).revoke("meter-1", reason="stolen")
    clock.advance(NOTICE_GRACE + 1)
    with pytest.raises(MessageRejected):
        device.send({"n": 1})
    assert "signing_key" in device.state_path.read_text()


class PushTransport(DirectTransport):
    """DirectTransport plus the pushes the server sealed (what MQTT would carry)."""

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.pushes: list[bytes] = []

    def receive(self, timeout: float | None = None) -> bytes | None:
        return self.pushes.pop(0) if self.pushes else None


def test_a_pushed_notice_is_sealed_once_and_acted_on(device: Device, ctx: ServerContext) -> None:
    pushes = PushTransport(ctx)
    device._transport = pushes
    assert ctx.messages.push_notice("meter-1") is None  # not revoked
    revocations(ctx).revoke("meter-1", reason="stolen")
    assert ctx.store.notices_to_push(now=ctx.messages.clock()) == ["meter-1"]
    sealed = ctx.messages.push_notice("meter-1")
    assert sealed is not None
    assert ctx.messages.push_notice("meter-1") is None  # claimed once
    pushes.pushes.append(sealed)
    with pytest.raises(DeviceRevoked):
        device.receive(timeout=0)
    assert "signing_key" not in device.state_path.read_text()


def test_tampered_notice_is_refused_and_keeps_the_keys(device: Device, ctx: ServerContext) -> None:
    pushes = PushTransport(ctx)
    device._transport = pushes
    revocations(ctx).revoke("meter-1", reason="stolen")
    sealed = ctx.messages.push_notice("meter-1")
    assert sealed is not None
    head, rest = sealed.split(b".", 1)
    tampered = head + b"." + rest[:-3] + (b"AAA" if rest[-3:] != b"AAA" else b"BBB")
    pushes.pushes.append(tampered)
    with pytest.raises(InvalidMessage):
        device.receive(timeout=0)
    assert "signing_key" in device.state_path.read_text()


def _enrol_with(ctx: ServerContext, device_id: str, secret: str) -> dict[str, object]:
    first = ctx.enrolment.issue_first_token(device_id, secret)
    signing, decryption = generate_signing_key(), generate_decryption_key()
    proof = _proof(signing, decryption, device_id, ctx.settings.issuer, first.challenge)
    return ctx.enrolment.exchange_keys(
        first.token,
        {
            "signing_key": signing.public().to_jwk(),
            "encryption_key": decryption.public().to_jwk(),
            "proof": proof,
        },
    )


def test_re_enrolment_is_refused_until_provision_force(device: Device, ctx: ServerContext) -> None:
    old = ctx.store.get_device("meter-1")
    assert old is not None and old.certificate_pem is not None
    old_serial = x509.load_pem_x509_certificate(old.certificate_pem.encode()).serial_number
    revocations(ctx).revoke("meter-1", reason="stolen")
    with pytest.raises(EnrolmentRejected):  # the old (spent) secret
        ctx.enrolment.issue_first_token("meter-1", "not-the-secret")
    with pytest.raises(DeviceExists):  # no new secret without --force
        ctx.enrolment.provision("meter-1")
    secret = ctx.enrolment.provision("meter-1", force=True)
    result = _enrol_with(ctx, "meter-1", secret)
    new_serial = x509.load_pem_x509_certificate(
        str(result["device_certificate"]).encode()
    ).serial_number
    crl = x509.load_der_x509_crl(revocations(ctx).current_crl().der)
    assert crl.get_revoked_certificate_by_serial_number(old_serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(new_serial) is None


def test_a_first_token_from_before_the_revocation_is_worthless(ctx: ServerContext) -> None:
    secret = ctx.enrolment.provision("meter-2")
    first = ctx.enrolment.issue_first_token("meter-2", secret)
    revocations(ctx).revoke("meter-2", reason="stolen in transit")
    signing, decryption = generate_signing_key(), generate_decryption_key()
    proof = _proof(signing, decryption, "meter-2", ctx.settings.issuer, first.challenge)
    with pytest.raises(EnrolmentRejected):
        ctx.enrolment.exchange_keys(
            first.token,
            {
                "signing_key": signing.public().to_jwk(),
                "encryption_key": decryption.public().to_jwk(),
                "proof": proof,
            },
        )
    with pytest.raises(EnrolmentRejected):  # and a fresh attempt with its secret
        ctx.enrolment.issue_first_token("meter-2", secret)


def test_crl_lists_the_certificate_and_is_renumbered_on_revoke_and_refresh(
    device: Device, ctx: ServerContext, clock: FrozenClock
) -> None:
    service = revocations(ctx)
    empty = service.current_crl()
    done = service.revoke("meter-1", reason="stolen")
    assert done.crl_number == empty.number + 1
    crl = x509.load_der_x509_crl(service.current_crl().der)
    assert crl.is_signature_valid(ctx.identity.ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ctx.identity.ca.certificate.subject
    entry = crl.get_revoked_certificate_by_serial_number(done.serial or 0)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    # Revoking again changes nothing; half-way to nextUpdate the CRL is re-signed.
    assert not service.revoke("meter-1", reason="again").new
    assert service.current_crl().number == done.crl_number
    clock.advance(timedelta(days=4).total_seconds())
    assert service.current_crl().number == done.crl_number + 1


def test_revoke_refuses_bad_input(ctx: ServerContext) -> None:
    service = revocations(ctx)
    with pytest.raises(ValueError, match="no device"):
        service.revoke("nobody", reason="x")
    ctx.enrolment.provision("meter-3")
    for reason in ("", "   ", "bad\x1b[31m"):
        with pytest.raises(ValueError, match="reason"):
            service.revoke("meter-3", reason=reason)
    with pytest.raises(ValueError, match="device id"):
        service.revoke("../etc", reason="x")
