"""The reply to each accepted message kind (US 11,546,310 B2 claims 2–5).

Telemetry is acknowledged, a poll gets a command delivery or ``no-command``, a command
result and a firmware report are recorded, a key rotation is completed and answered
under the new keys, a de-registration ends the device. A device that sealed to an
older server key generation gets ``SERVER_KEYS`` in place of its ack.
"""

from __future__ import annotations

from dataclasses import replace

from hatchway.errors import InvalidMessage
from hatchway.flows import firmware as fw
from hatchway.flows.keyrotation import rotated_body
from hatchway.flows.messaging.delivery import Delivery
from hatchway.flows.messaging.peers import _Peer, _peer_from_record
from hatchway.msgsec import Message, MessageType
from hatchway.msgsec.rotation import server_keys_body
from hatchway.store import (
    AcceptResult,
    CommandStatus,
    DeviceStatus,
    InvalidTransition,
    UnknownCommand,
)


class Dispatch(Delivery):
    """What the server answers once the store has taken a message."""

    def _dispatch(
        self, peer: _Peer, message: Message, now: float, accepted: AcceptResult
    ) -> Message | bytes:
        """The reply: a message to seal, or the sealed bytes of an earlier delivery."""
        kind, seq = message.typ, accepted.reply_seq

        def ack(status: str) -> Message:
            if peer.behind is not None:  # the device learns the current server keys
                current, until = self.keyring.current, peer.behind.retires_at or now
                body = server_keys_body(
                    current.signing.public(),
                    current.decryption.public(),
                    retires_at=int(until),
                    status=status,
                )
                return self._message(peer, MessageType.SERVER_KEYS, message, now, body, seq)
            return self._message(peer, MessageType.ACK, message, now, {"status": status}, seq)

        if kind is MessageType.POLL:
            delivery = self._deliver(peer, message, now, seq, accepted.duplicate)
            return delivery or ack("no-command")
        if kind is MessageType.COMMAND_RESULT:
            cid = str(message.body["cid"])
            record = self.store.get_command(cid)
            # A retransmission whose first copy was stored but whose result was not
            # recorded (the store failed in between) records it now: nothing is lost.
            if record is not None and record.status is not CommandStatus.DONE:
                try:
                    self.store.record_command_result(peer.device_id, cid, message.body, now=now)
                except (UnknownCommand, InvalidTransition) as exc:
                    raise InvalidMessage(f"result for command {cid!r} refused: {exc}") from None
            return ack("duplicate" if accepted.duplicate else "recorded")
        if kind is MessageType.KEY_ROTATE:
            signed_by = peer.sender.verifying_key
            rotation = self.rotation.rotate(
                peer.device_id, message, signed_by, peer.encryption_key, now
            )
            self.forget(rotation.old_signing_kid)
            device = self.store.get_device(peer.device_id)
            if device is None or device.status is not DeviceStatus.ENROLLED:
                raise InvalidMessage("device gone during its key rotation")
            # Sealed to the new encryption key: only the holder of the new keys reads it.
            new = replace(_peer_from_record(device), behind=peer.behind)
            body = rotated_body(rotation)
            return self._seal(
                new, self._message(peer, MessageType.KEY_ROTATED, message, now, body, seq)
            )
        if kind is MessageType.FIRMWARE_REPORT:
            if accepted.duplicate:
                return ack("duplicate")
            return ack(fw.record_report(self.store, peer.device_id, message.body, now))
        if kind is MessageType.DEREGISTER:
            # Idempotent, so a retransmission after a failure completes it.
            self.store.deregister_device(peer.device_id, now=now)
            self.forget(peer.sender.verifying_key.kid)
            return ack("deregistered")
        return ack("duplicate" if accepted.duplicate else "stored")
