"""Sealing replies, and handing out queued commands and firmware offers.

A poll is answered by at most one command delivery: the store picks the command and
keeps the sealed reply under the poll's ``mid`` in one transaction, so a retransmitted
poll gets the same bytes again. A server-initiated push (MQTT downlink) claims the
command before returning its bytes, so of several replicas exactly one sends it.
"""

from __future__ import annotations

import logging
from typing import Any

from hatchway.errors import InvalidMessage
from hatchway.flows.messaging.peers import PeerCache, _Peer, _peer_from_record
from hatchway.msgsec import Message, MessageType, Suite, seal
from hatchway.store import CommandRecord, DeviceStatus, SealedDelivery, UnknownDevice

log = logging.getLogger("hatchway.messages")


class Delivery(PeerCache):
    """Seal messages for a device: replies, command deliveries and server pushes."""

    def _deliver(
        self, peer: _Peer, message: Message, now: float, seq: int, retransmission: bool
    ) -> bytes | None:
        def seal_command(command: CommandRecord) -> SealedDelivery:
            kind, body = self._outbound(peer, command)
            reply = self._message(peer, kind, message, now, body, seq)
            sealed = self._seal(peer, reply)
            return SealedDelivery(jti=reply.jti, exp=float(reply.exp), reply=sealed)

        mid = message.body.get("mid")
        try:
            delivery = self.store.deliver_command(
                peer.device_id,
                mid=mid if isinstance(mid, str) else None,
                now=now,
                seal=seal_command,
                retransmission=retransmission,
            )
        except UnknownDevice as exc:  # gone since accept_message (another replica)
            self.forget(peer.sender.verifying_key.kid)
            raise InvalidMessage(f"store refused: {exc}") from None
        if delivery is None:
            return None
        if delivery.repeated:
            log.info(
                "poll mid %s from %s answered again with delivery %s of command %s",
                mid,
                peer.device_id,
                delivery.jti,
                delivery.command_id,
            )
        return delivery.reply

    def _outbound(self, peer: _Peer, command: CommandRecord) -> tuple[MessageType, dict[str, Any]]:
        """A queued row as the message it is sent as: a firmware offer or a command."""
        offer = self.offers.body(command.body, peer.encryption_key)
        if offer is not None:
            return MessageType.FIRMWARE_UPDATE, offer
        return MessageType.COMMAND, command_body(command.command_id, command.body)

    def _message(
        self,
        peer: _Peer,
        kind: MessageType,
        request: Message,
        now: float,
        body: dict[str, Any],
        seq: int,
    ) -> Message:
        return Message(
            typ=kind,
            iss=self.server_id,
            aud=peer.device_id,
            iat=int(now),
            exp=int(now) + self.settings.message_ttl,
            jti=self.random(16).hex(),
            seq=seq,
            body=body,
            in_reply_to=request.jti,
        )

    def _seal(self, peer: _Peer, reply: Message) -> bytes:
        signing_key = (peer.behind or self.keyring.current).signing
        return seal(
            reply,
            signing_key=signing_key,
            recipient_key=peer.encryption_key,
            suite=Suite(sign=signing_key.alg, key=peer.sender.suite.key),
            random=self.random,
        )

    def seal_for(self, device_id: str, kind: MessageType, body: dict[str, Any]) -> bytes:
        record = self.store.get_device(device_id)
        if record is None or record.status is not DeviceStatus.ENROLLED:
            raise LookupError(f"device {device_id!r} is not enrolled")
        return self._server_message(_peer_from_record(record), kind, body)

    def _server_message(self, peer: _Peer, kind: MessageType, body: dict[str, Any]) -> bytes:
        """A server-initiated message (no ``irt``) for ``peer``, sealed."""
        now = self.clock()
        message = Message(
            typ=kind,
            iss=self.server_id,
            aud=peer.device_id,
            iat=int(now),
            exp=int(now) + self.settings.message_ttl,
            jti=self.random(16).hex(),
            seq=self.store.next_outbound_seq(peer.device_id),
            body=body,
        )
        return self._seal(peer, message)

    def push_command(self, command: CommandRecord) -> bytes | None:
        """Seal a queued command (or firmware offer) for a server-initiated push (MQTT).

        The command is claimed (queued -> delivered with the push's ``jti``) before it
        is returned, so of several replicas racing to push it exactly one gets bytes;
        the others, and a device no longer enrolled, get None.
        """
        record = self.store.get_device(command.device_id)
        if record is None or record.status is not DeviceStatus.ENROLLED:
            return None
        peer = _peer_from_record(record)
        now = self.clock()
        kind, body = self._outbound(peer, command)
        message = Message(
            typ=kind,
            iss=self.server_id,
            aud=peer.device_id,
            iat=int(now),
            exp=int(now) + self.settings.message_ttl,
            jti=self.random(16).hex(),
            seq=self.store.next_outbound_seq(peer.device_id),
            body=body,
        )
        sealed = SealedDelivery(
            jti=message.jti, exp=float(message.exp), reply=self._seal(peer, message)
        )
        if not self.store.claim_command_delivery(
            command.command_id, peer.device_id, sealed=sealed, now=now
        ):
            return None
        return sealed.reply


def command_body(cid: str, queued: dict[str, Any]) -> dict[str, Any]:
    """The COMMAND body: ``op`` from the operator's JSON, every other key under ``args``."""
    args = {k: v for k, v in queued.items() if k != "op"}
    body: dict[str, Any] = {"cid": cid, "op": str(queued.get("op", ""))}
    if args:
        body["args"] = args
    return body


def check_command(queued: dict[str, Any]) -> dict[str, Any]:
    """Operator input: a JSON object with a non-empty string ``op``."""
    if not isinstance(queued.get("op"), str) or not queued["op"]:
        raise ValueError('a command needs an "op" string, e.g. {"op": "reboot"}')
    return queued
