"""Firmware on the sealed channel, in process (issue 9): enrolment keys, offers, reports.

Attack-style: a retransmitted poll gets the very same offer bytes, a report whose
reply was lost is stored once (``duplicate``), malformed reports are refused before
anything is stored, and a report for a release never offered is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hatchway.device import Device, MessageRejected, TransportError
from hatchway.firmware import (
    ChunkCipher,
    TrustStore,
    generate_firmware_key,
    split_chunks,
    unwrap_content_key,
)
from hatchway.firmware.crypt import new_content_key
from hatchway.firmware.keys import TRUST_FORMAT
from hatchway.firmware.rollout import FwState
from hatchway.msgsec import MessageType
from hatchway.runtime import FrozenClock, SeededRandom, system_random
from hatchway.server.context import ServerContext
from hatchway.store.firmware_records import ReleaseRecord
from tests.firmware.conftest import image_bytes, make_manifest, signed
from tests.flows.conftest import DirectTransport, enrol

KEY_A = generate_firmware_key(random=SeededRandom(b"fw-a"))
KEY_B = generate_firmware_key(random=SeededRandom(b"fw-b"))


def publish(ctx: ServerContext, now: float) -> ReleaseRecord:
    image = image_bytes(70000)
    manifest = make_manifest(image)
    content_key = new_content_key(system_random)
    cipher = ChunkCipher(content_key, manifest.sha256)
    sealed = [cipher.seal(i, piece, system_random) for i, piece in enumerate(split_chunks(image))]
    release = ReleaseRecord(
        release_id="r1",
        device_class=manifest.device_class,
        version=manifest.version,
        seq=manifest.sequence,
        kid=KEY_A.kid,
        manifest=signed(image, KEY_A).decode(),
        sha256=manifest.sha256,
        size=manifest.size,
        chunk_count=2,
        content_key=content_key,
        created_at=now,
    )
    ctx.store.add_release(release, sealed)
    return release


def poll(device: Device) -> Any:
    expect = {MessageType.ACK, MessageType.FIRMWARE_UPDATE, MessageType.COMMAND}
    return device._exchange(MessageType.POLL, {}, expect)


def report(device: Device, **body: Any) -> str:
    ack = device._exchange(MessageType.FIRMWARE_REPORT, body, {MessageType.ACK})
    return str(ack.body["status"])


@pytest.fixture
def device(ctx: ServerContext, tmp_path: Path, clock: FrozenClock) -> Device:
    made = enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)
    publish(ctx, clock())
    ctx.store.add_to_group("pilot", ["meter-1"], now=clock())
    ctx.store.start_rollout("r1", "pilot", confirm_within=300, now=clock())
    return made


def test_enrolment_hands_out_the_firmware_keys(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    now = int(clock())
    ctx.store.change_firmware_trust(lambda t: t.add(KEY_A.public(), now), now=now)
    ctx.store.change_firmware_trust(lambda t: t.add(KEY_B.public(), now), now=now)
    ctx.store.change_firmware_trust(lambda t: t.revoke(KEY_B.kid, now, "laptop"), now=now)
    secret = ctx.enrolment.provision("m")
    first = ctx.enrolment.issue_first_token("m", secret)
    from tests.flows.test_enrolment import keys_request

    result = ctx.enrolment.exchange_keys(first.token, keys_request(ctx, first, "m"))
    keys = result["firmware"]["keys"]
    assert all("reason" not in k for k in keys)  # the operator's words stay home
    trust = TrustStore.from_json({"format": TRUST_FORMAT, "keys": keys})
    assert trust.can_publish(KEY_A.kid)
    assert trust.get(KEY_B.kid).status == "revoked"  # type: ignore[union-attr]


class HoldFirst(DirectTransport):
    """An on-path party holds the first token back; the device times out and retransmits."""

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.held: bytes | None = None
        self.replies: list[bytes] = []

    def __call__(self, url: str, token: bytes) -> bytes:
        if self.held is None:
            self.held = token
            raise TransportError("timed out")
        reply = super().__call__(url, token)
        self.replies.append(reply)
        return reply


def test_offer_is_wrapped_to_the_device_and_repeated_verbatim(
    ctx: ServerContext, device: Device
) -> None:
    hold = HoldFirst(ctx)
    device._transport, device.retry_for = hold, 5
    offer = poll(device)
    assert offer.typ is MessageType.FIRMWARE_UPDATE
    assert set(offer.body) == {"release", "manifest", "key", "chunks", "confirm_within"}
    release = ctx.store.get_release("r1")
    assert release is not None
    key = unwrap_content_key(offer.body["key"], device._decryption, release.sha256)
    assert key == release.content_key
    # The held poll, released after the retransmission was answered: the same sealed
    # bytes (same mid), not a second delivery.
    assert hold.held is not None
    assert ctx.messages.handle(hold.held) == hold.replies[0]
    assert poll(device).typ is MessageType.ACK


def test_mqtt_push_seals_an_offer_too(ctx: ServerContext, device: Device) -> None:
    (queued,) = ctx.store.queued_commands()
    pushed = ctx.messages.push_command(queued)
    assert pushed is not None
    from hatchway.msgsec import OpenPolicy, open_message

    message, _ = open_message(
        pushed,
        decryption_keys={device._decryption.kid: device._decryption},
        resolve_sender=lambda kid: device._server,
        policy=OpenPolicy(audience="meter-1", expected=frozenset({MessageType.FIRMWARE_UPDATE})),
        now=device.clock(),
    )
    assert message.body["release"] == "r1" and message.in_reply_to is None


class LoseFirstReply(DirectTransport):
    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.lost = False

    def __call__(self, url: str, token: bytes) -> bytes:
        reply = super().__call__(url, token)
        if not self.lost:
            self.lost = True
            raise TransportError("reply lost")
        return reply


def test_a_report_whose_ack_was_lost_is_stored_once(ctx: ServerContext, device: Device) -> None:
    poll(device)
    device._transport = LoseFirstReply(ctx)
    device.retry_for = 5
    assert report(device, release="r1", state="downloading", progress=10) == "duplicate"
    _, rows = ctx.store.rollout_status("r1")
    assert rows[0].state is FwState.DOWNLOADING and rows[0].progress == 10


@pytest.mark.parametrize(
    "body",
    [
        {"release": "r1", "state": "offered"},  # the server's state, not a report
        {"release": "r1", "state": "pending"},
        {"release": "r1", "state": "bogus"},
        {"release": "r1", "state": "refused"},  # no reason
        {"release": "r1", "state": "refused", "reason": "health_check_failed"},  # wrong kind
        {"release": "r1", "state": "rolled_back", "reason": "rollback"},
        {"release": "r1", "state": "verified", "reason": "rollback"},
        {"release": "r1", "state": "verified", "progress": 100},
        {"release": "r1", "state": "downloading", "progress": 101},
        {"release": "r1", "state": "downloading", "progress": -1},
        {"release": "../r1", "state": "verified"},
        {"release": "", "state": "verified"},
    ],
)
def test_malformed_reports_are_refused_before_storing(
    ctx: ServerContext, device: Device, body: dict[str, Any]
) -> None:
    poll(device)
    with pytest.raises(MessageRejected):
        report(device, **body)
    _, rows = ctx.store.rollout_status("r1")
    assert rows[0].state is FwState.OFFERED
    assert [m.typ for m in ctx.store.list_messages("meter-1")][-1] == MessageType.POLL.value


def test_reports_for_an_unoffered_release_or_a_bad_move_are_refused(
    ctx: ServerContext, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    assert report(device, release="r2", state="verified") == "refused"
    poll(device)
    assert report(device, release="r1", state="installed") == "recorded"
    with caplog.at_level("WARNING", logger="hatchway.firmware"):
        assert report(device, release="r1", state="verified") == "refused"
    assert "installed -> verified is not allowed" in caplog.text
