"""The device SDK's safe surface: ``Device.send``, ``poll``, ``respond``, ``deregister``,
``rotate_keys``.

Every message is sealed (JWS inside JWE) before it leaves and every reply is opened and
checked: it must be the expected kind, signed by the pinned server key, addressed to us,
fresh, not replayed, and carry the ``jti`` of our request in ``irt``.

Any reply, or push, may instead be the server's ``DEREGISTERED`` notice: the operator
revoked this device. The SDK then deletes its keys (:mod:`hatchway.device.revoked`),
raises :class:`DeviceRevoked`, and never sends again.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hatchway.device.enrol import enroll
from hatchway.device.firmware.identity import FirmwareIdentity
from hatchway.device.revoked import DeviceRevoked, bury
from hatchway.device.rotation import (
    PendingRotation,
    apply_server_keys,
    begin_rotation,
    finish_rotation,
)
from hatchway.device.state import FORMAT, DeviceState, StateFile
from hatchway.device.transport import HttpTransport, MessageRejected, Transport, TransportError
from hatchway.errors import InvalidMessage
from hatchway.msgsec import (
    DecryptionKey,
    EncryptionKey,
    KeyAlg,
    Message,
    MessageType,
    OpenPolicy,
    ReplayWindow,
    SenderInfo,
    SignAlg,
    SigningKey,
    Suite,
    VerifyingKey,
    open_message,
    seal,
)
from hatchway.runtime import Clock, Random, system_clock, system_random


@dataclass(frozen=True, slots=True)
class Command:
    cid: str
    body: dict[str, Any]
    message: Message


class Device:
    def __init__(
        self,
        state_file: StateFile,
        *,
        transport: Transport | None = None,
        clock: Clock = system_clock,
        random: Random = system_random,
        message_ttl: int = 120,
        retry_for: float = 30.0,
    ) -> None:
        self._file = state_file
        self._transport: Transport = transport or HttpTransport()
        self.clock = clock
        self.random = random
        self.message_ttl = message_ttl
        self.retry_for = retry_for
        st = state_file.state
        self.device_id = st.device_id
        self.server_id = st.server_id
        self._signing = SigningKey.from_jwk(st.signing_key)
        self._decryption = DecryptionKey.from_jwk(st.encryption_key)
        self._suite = Suite.from_json(st.suite)
        self._trust_server(st.server_keys)
        # A rotation under way (docs/key-rotation.md): the server may already seal to its
        # new encryption key, so replies are opened with it too until it is finished.
        pending = PendingRotation.load(state_file)
        self._pending_decryption = None if pending is None else pending.decryption
        self._url = st.endpoints["messages"]
        self._revoked: DeviceRevoked | None = None
        #: Firmware offers received (poll replies, pushes), newest last; see device/firmware.
        self.offers: deque[Message] = deque(maxlen=4)
        # Transports that address by device rather than URL (MQTT topics) learn it here.
        bind = getattr(self._transport, "bind", None)
        if callable(bind):
            bind(st.device_id, st.endpoints)

    def _trust_server(self, server_keys: dict[str, Any]) -> None:
        server_sig, server_enc = _server_keys(server_keys)
        self._server_enc = server_enc
        self._server = SenderInfo(
            id=self.server_id,
            verifying_key=server_sig,
            suite=Suite(sign=server_sig.alg, key=self._suite.key, enc=self._suite.enc),
        )

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def enroll(
        cls,
        *,
        server: str,
        device_id: str,
        secret: str,
        state_path: Path,
        ca_file: Path | None = None,
        sign_alg: SignAlg = SignAlg.ES256,
        enc_curve: str = "P-256",
        key_alg: KeyAlg = KeyAlg.ECDH_ES,
        firmware: FirmwareIdentity | None = None,
        **options: Any,
    ) -> Device:
        state = enroll(
            server=server,
            device_id=device_id,
            secret=secret,
            state_path=state_path,
            ca_file=ca_file,
            sign_alg=sign_alg,
            enc_curve=enc_curve,
            key_alg=key_alg,
            firmware=firmware,
        )
        return cls(state, **options)

    @classmethod
    def load(cls, state_path: Path, **options: Any) -> Device:
        return cls(StateFile.load(state_path), **options)

    @property
    def state_path(self) -> Path:
        return self._file.path

    @property
    def state(self) -> DeviceState:
        return self._file.state

    # -- the safe calls -------------------------------------------------------------------
    def send(self, data: dict[str, Any]) -> Message:
        """Send telemetry; returns the server's acknowledgement."""
        return self._exchange(MessageType.TELEMETRY, {"readings": data}, {MessageType.ACK})

    def poll(self) -> Command | None:
        """Ask for the next queued command; ``None`` when there is none.

        A firmware offer answering the poll is kept in ``offers`` and the poll repeated
        (a few times at most), so commands still come through while an update is offered.
        """
        for _ in range(3):
            reply = self._exchange(MessageType.POLL, {}, _POLL_REPLIES)
            if reply.typ is MessageType.FIRMWARE_UPDATE:
                self._offered(reply)
                continue
            return self._remember(reply) if reply.typ is MessageType.COMMAND else None
        return None

    def poll_offer(self) -> dict[str, Any] | None:
        """The newest firmware offer's body: one received before, else a poll's answer.

        A command answering the poll instead is remembered (answerable later; the
        server delivers it again until answered).
        """
        if not self.offers and "firmware_offer" not in self._file.state.extra:
            reply = self._exchange(MessageType.POLL, {}, _POLL_REPLIES)
            if reply.typ is MessageType.COMMAND:
                self._remember(reply)
            elif reply.typ is MessageType.FIRMWARE_UPDATE:
                self._offered(reply)
        extra = dict(self._file.state.extra)
        kept = extra.pop("firmware_offer", None)
        body = self.offers.pop().body if self.offers else kept
        self.offers.clear()
        if kept is not None:
            self._file.update(extra=extra)
            self._file.save()
        return body if isinstance(body, dict) else None

    def _offered(self, message: Message) -> None:
        # An offer is delivered once: keep it on disk until an updater takes it, so a
        # `device poll` that met it does not lose it.
        self.offers.append(message)
        self._file.update(extra={**self._file.state.extra, "firmware_offer": message.body})
        self._file.save()

    def report_firmware(self, body: dict[str, Any]) -> Message:
        """Send a FIRMWARE_REPORT (firmware/wire.py) and check the acknowledgement."""
        return self._exchange(MessageType.FIRMWARE_REPORT, body, {MessageType.ACK})

    def save_firmware(self, firmware: dict[str, Any]) -> None:
        """Persist the firmware position and trust (device/firmware/identity.py)."""
        self._file.update(firmware=firmware)
        self._file.save()

    def receive(self, timeout: float | None = None) -> Command | None:
        """Wait up to ``timeout`` seconds for a command the server pushed.

        Only transports that carry server pushes (MQTT) have them. Raises the opaque
        ``InvalidMessage`` for a push that does not open (forged, replayed, or sealed
        so long ago that it expired while queued); ``poll()`` then fetches it afresh.
        """
        receive = getattr(self._transport, "receive", None)
        if not callable(receive):
            raise TypeError("this transport carries no server pushes; use poll()")
        self._check_live()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Every reply kind too, so that a stray reply is skipped below, not an error.
        expected = frozenset(
            {
                *_POLL_REPLIES,
                MessageType.DEREGISTERED,
                MessageType.SERVER_KEYS,
                MessageType.KEY_ROTATED,
            }
        )
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            raw = receive(left)
            if raw is None:
                return None
            push, _ = open_message(
                raw,
                decryption_keys={self._decryption.kid: self._decryption},
                resolve_sender=lambda kid: (
                    self._server if kid == self._server.verifying_key.kid else None
                ),
                policy=OpenPolicy(audience=self.device_id, expected=expected),
                now=self.clock(),
            )
            if push.typ is MessageType.DEREGISTERED:
                self._revoke(push)  # pushed, or a reply to a request that gave up
            # Classified once opened, not by what the broker says: a reply (to a request
            # that gave up, or one the broker redelivered) is no command; skip it.
            if push.in_reply_to is None and push.typ is MessageType.COMMAND:
                self._accept_inbound(push)
                return self._remember(push)
            if push.in_reply_to is None and push.typ is MessageType.FIRMWARE_UPDATE:
                self._accept_inbound(push)
                self._offered(push)
                return None

    def _remember(self, delivery: Message) -> Command:
        cid = str(delivery.body["cid"])
        # Remember which delivery to answer (its jti goes in the result's `irt`), and
        # persist the inbound window before the caller acts on the command.
        delivered = dict(self._file.state.extra.get("commands", {}))
        delivered[cid] = delivery.jti
        while len(delivered) > 32:
            delivered.pop(next(iter(delivered)))
        self._file.update(extra={**self._file.state.extra, "commands": delivered})
        self._file.save()
        return Command(cid=cid, body=delivery.body, message=delivery)

    def respond(
        self, command: Command | str, result: Any = None, *, error: str | None = None
    ) -> Message:
        """Answer a command: its result, or ``error`` when it failed."""
        if isinstance(command, Command):
            cid, irt = command.cid, command.message.jti
        else:
            cid, irt = command, self._file.state.extra.get("commands", {}).get(command)
            if irt is None:
                raise ValueError(f"no command {command!r} was received by this device")
        body: dict[str, Any] = {"cid": cid, "ok": error is None}
        if result is not None:
            body["result"] = result
        if error is not None:
            body["error"] = error
        return self._exchange(MessageType.COMMAND_RESULT, body, {MessageType.ACK}, irt=irt)

    def deregister(self, reason: str = "requested by device") -> Message:
        return self._exchange(MessageType.DEREGISTER, {"reason": reason}, {MessageType.ACK})

    def rotate_keys(self) -> Message:
        """Rotate this device's signing and encryption keys; returns the server's answer.

        The new keys are saved (pending) before anything is sent, so after a crash or a
        lost reply calling this again finishes the same rotation (docs/key-rotation.md).
        """
        pending = PendingRotation.load(self._file) or begin_rotation(
            self._file, self._signing, self._decryption, self.random
        )
        self._pending_decryption = pending.decryption
        expect = {MessageType.KEY_ROTATED}
        try:
            reply = self._exchange(MessageType.KEY_ROTATE, pending.body(), expect)
        except (MessageRejected, InvalidMessage):
            # A rotation the server completed but whose answer was lost, and whose old
            # key has since retired: the server still answers it under the new key.
            reply = self._exchange(
                MessageType.KEY_ROTATE,
                pending.body(),
                expect,
                signing_key=pending.signing,
            )
        finish_rotation(self._file, pending, reply)
        self._signing, self._decryption = pending.signing, pending.decryption
        self._pending_decryption = None
        return reply

    def close(self) -> None:
        close = getattr(self._transport, "close", None)
        if callable(close):
            close()
        if self._revoked is None:  # a revoked device's keys must not be written back
            self._file.save()
        self._file.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline ---------------------------------------------------------------------
    def _exchange(
        self,
        kind: MessageType,
        body: dict[str, Any],
        expect: set[MessageType],
        *,
        irt: str | None = None,
        signing_key: SigningKey | None = None,
    ) -> Message:
        self._check_live()
        # One mid for every retransmission, so the server stores the message exactly once.
        body = {"mid": uuid.UUID(bytes=self.random(16)).hex, **body}
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        # Every copy of this request (same mid) we sent: the server answers a retransmitted
        # poll with the reply it sealed for the first copy that reached it.
        sent: set[str] = set()
        while True:
            request = self._message(kind, body, irt)
            sent.add(request.jti)
            token = seal(
                request,
                signing_key=signing_key or self._signing,
                recipient_key=self._server_enc,
                suite=self._suite,
                random=self.random,
            )
            try:
                raw = self._transport(self._url, token)
            except TransportError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            return self._open_reply(raw, sent, expect)

    def _message(self, kind: MessageType, body: dict[str, Any], irt: str | None) -> Message:
        now = int(self.clock())
        return Message(
            typ=kind,
            iss=self.device_id,
            aud=self.server_id,
            iat=now,
            exp=now + self.message_ttl,
            jti=self.random(16).hex(),
            seq=self._file.next_seq(),
            body=body,
            in_reply_to=irt,
        )

    def _open_reply(self, raw: bytes, sent: set[str], expect: set[MessageType]) -> Message:
        # The reply names in `irt` the jti of one copy of our request (they differ only in
        # seq and jti), so a reply to some other request of ours is refused.
        keys = {self._decryption.kid: self._decryption}
        also = self._pending_decryption
        if also is not None:  # sealed to the new key of a rotation under way
            keys[also.kid] = also
        if MessageType.ACK in expect:  # the server may announce new keys instead
            expect = expect | {MessageType.SERVER_KEYS}
        reply, _ = open_message(
            raw,
            decryption_keys=keys,
            resolve_sender=lambda kid: (
                self._server if kid == self._server.verifying_key.kid else None
            ),
            policy=OpenPolicy(
                audience=self.device_id, expected=frozenset({*expect, MessageType.DEREGISTERED})
            ),
            now=self.clock(),
        )
        if reply.in_reply_to not in sent:
            raise InvalidMessage("reply does not answer our request")
        if reply.typ is MessageType.DEREGISTERED:
            self._revoke(reply)
        self._accept_inbound(reply)
        if reply.typ is MessageType.SERVER_KEYS:
            # Signed by the server key we trust: from now on seal to, and trust, the new one.
            self._trust_server(apply_server_keys(self._file, reply))
        return reply

    def _check_live(self) -> None:
        if self._revoked is not None:
            raise self._revoked

    def _revoke(self, notice: Message) -> None:
        """Act on an opened ``DEREGISTERED`` notice: delete the keys, then raise."""
        revoked = DeviceRevoked(
            self.device_id, str(notice.body["reason"]), int(notice.body["revoked_at"])
        )
        self._revoked = revoked
        bury(self._file.path, revoked, fmt=FORMAT, server_id=self.server_id, now=self.clock())
        raise revoked

    def _accept_inbound(self, message: Message) -> None:
        st = self._file.state
        window = ReplayWindow(highest=st.inbound_highest, bitmap=st.inbound_bitmap).accept(
            message.seq
        )
        self._file.update(inbound_highest=window.highest, inbound_bitmap=window.bitmap)


_POLL_REPLIES = {MessageType.ACK, MessageType.COMMAND, MessageType.FIRMWARE_UPDATE}


def _server_keys(jwks: dict[str, Any]) -> tuple[VerifyingKey, EncryptionKey]:
    signing: VerifyingKey | None = None
    encryption: EncryptionKey | None = None
    for jwk in jwks.get("keys", []):
        if jwk.get("use") == "sig" and signing is None:
            signing = VerifyingKey.from_jwk(jwk)
        elif jwk.get("use") == "enc" and encryption is None:
            encryption = EncryptionKey.from_jwk(jwk)
    if signing is None or encryption is None:
        raise InvalidMessage("server key set lacks a signing or an encryption key")
    return signing, encryption


__all__ = ["Command", "Device", "DeviceRevoked", "MessageRejected", "TransportError"]
