"""Revoked devices (:mod:`hatchway.flows.deregistration`): the sealed notice.

A device the operator revoked is answered, once, with a sealed ``DEREGISTERED``
notice instead; nothing of its message is stored, and everything after the notice is
refused. A cached sender the store refuses is looked up afresh here: revoked
meanwhile, it gets the notice; re-keyed through another replica, its message is taken
once more.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows.deregistration import notice_body
from hatchway.flows.messaging.admission import Admission, _check_mid, _Revoked
from hatchway.flows.messaging.peers import _Peer, _peer_from_record
from hatchway.msgsec import Message, MessageType
from hatchway.store import DeviceStatus, SealedDelivery

log = logging.getLogger("hatchway.messages")


class Revocation(Admission):
    """The de-registration notice, answered or pushed, and refusals of cached senders."""

    def _after_refusal(self, peer: _Peer, message: Message, now: float) -> bytes:
        """A cached sender the store refused (the accept rolled back, nothing stored):
        revoked meanwhile with this key, it gets the notice; still valid under a fresh
        look-up (it rotated its keys through another replica and this is its old key,
        in the overlap), the message is taken once more; otherwise the refusal."""
        current = self._peer(peer.sender.verifying_key.kid)
        if current is None or current.device_id != peer.device_id or not self._live(current, now):
            raise InvalidMessage(f"store refused: {peer.device_id} is not enrolled")
        if current.revoked:
            return self._notice(current, message, now)
        if current.current_kid == peer.current_kid:  # nothing changed: no second try
            raise InvalidMessage(f"store refused: {peer.device_id} is not enrolled")
        fresh = replace(current, behind=peer.behind)
        self._precheck(fresh, message)
        try:
            accepted = self._accept(fresh, message, now)
        except _Revoked:  # a second refusal is final
            raise InvalidMessage(f"store refused: {peer.device_id} is not enrolled") from None
        reply = self._dispatch(fresh, message, now, accepted)
        return reply if isinstance(reply, bytes) else self._seal(fresh, reply)

    def _notice(self, peer: _Peer, message: Message, now: float) -> bytes:
        """The sealed de-registration notice for a revoked device's message."""
        _check_mid(message)
        revocation = self.store.get_revocation(peer.device_id)
        if revocation is None:  # re-provisioned meanwhile
            raise InvalidMessage(f"{peer.device_id} is no longer revoked")
        body = notice_body(revocation)

        def seal_notice(seq: int) -> SealedDelivery:
            reply = self._message(peer, MessageType.DEREGISTERED, message, now, body, seq)
            return SealedDelivery(
                jti=reply.jti, exp=float(reply.exp), reply=self._seal(peer, reply)
            )

        try:
            sealed = self.store.answer_revoked(
                self._accept_request(peer, message, now), seal_notice
            )
        except InvalidMessage:
            raise
        except (HatchwayError, ValueError) as exc:
            raise InvalidMessage(f"revoked device {peer.device_id!r} refused: {exc}") from None
        log.info("revoked device %s answered with its de-registration notice", peer.device_id)
        return sealed

    def push_notice(self, device_id: str) -> bytes | None:
        """Seal the de-registration notice for an MQTT push, claimed once (None: not ours)."""
        record = self.store.get_device(device_id)
        revocation = self.store.get_revocation(device_id)
        if record is None or record.status is not DeviceStatus.REVOKED or revocation is None:
            return None
        if record.signing_jwk is None or not self.store.claim_notice_push(
            device_id, now=self.clock()
        ):
            return None
        return self._server_message(
            _peer_from_record(record), MessageType.DEREGISTERED, notice_body(revocation)
        )
