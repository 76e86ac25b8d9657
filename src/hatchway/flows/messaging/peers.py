"""Who sent a message: the sender's keys by signing kid, cached per replica.

A cache miss, a stale entry (another replica de-registered or re-keyed the device) and
a signing key in its post-rotation overlap are all resolved by asking the store again;
the store re-checks the device inside the transaction that accepts each message, so
the cache only ever saves look-ups (docs/scaling.md sizes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hatchway.errors import InvalidMessage
from hatchway.flows.keyring import KeyGeneration
from hatchway.flows.messaging.state import ServiceState
from hatchway.msgsec import EncryptionKey, SenderInfo, Suite, VerifyingKey
from hatchway.store import DeviceRecord, DeviceStatus


@dataclass(frozen=True, slots=True)
class _Peer:
    device_id: str
    sender: SenderInfo
    encryption_key: EncryptionKey
    #: The device's current signing kid: the store checks it when accepting, also for
    #: a message signed by the key it rotated away from (``sender``, until ``until``).
    current_kid: str
    until: float = math.inf
    #: The older server key generation this message was sealed to (None: the current
    #: one): the reply is signed under it and announces the current keys.
    behind: KeyGeneration | None = None
    #: Revoked by the operator: its messages get the de-registration notice.
    revoked: bool = False


class PeerCache(ServiceState):
    """Sender look-up by signing kid, and the server key generation it sealed to."""

    def _peer(self, kid: str) -> _Peer | None:
        with self._peers_lock:
            peer = self._peers.get(kid)
            if peer is not None:
                self._peers.move_to_end(kid)
                return peer
        record = self.store.find_device_by_signing_kid(kid)
        if record is not None and record.status is DeviceStatus.REVOKED:
            return replace(_peer_from_record(record), revoked=True)  # never cached
        if record is None:
            peer = self._previous_peer(kid)
            if peer is None:
                return None
        elif record.status is not DeviceStatus.ENROLLED:
            return None
        else:
            peer = _peer_from_record(record)
        with self._peers_lock:
            self._peers[kid] = peer
            while len(self._peers) > self._cache_size:
                self._peers.popitem(last=False)
        return peer

    def _previous_peer(self, kid: str) -> _Peer | None:
        """A device's signing key during the overlap after it rotated away from it."""
        rotation = self.store.find_previous_signing_key(kid)
        record = None if rotation is None else self.store.get_device(rotation.device_id)
        if rotation is None or record is None:
            return None
        peer = _peer_from_record(record)
        old = VerifyingKey.from_jwk(rotation.old_signing_jwk)
        return replace(
            peer, sender=replace(peer.sender, verifying_key=old), until=rotation.retires_at
        )

    def _live(self, peer: _Peer, now: float) -> bool:
        if now < peer.until:
            return True
        self.forget(peer.sender.verifying_key.kid)  # the overlap is over: the old key is gone
        return False

    def _sealed_to(self, peer: _Peer, token: bytes, now: float) -> _Peer:
        """Note which server key generation the device sealed to; refuse a retired one."""
        generation = self.keyring.sealed_to(token)
        if not generation.live(now):
            raise InvalidMessage("sealed to a retired server key")
        if generation.generation == self.keyring.current.generation:
            return peer
        return replace(peer, behind=generation)

    def forget(self, kid: str) -> None:
        with self._peers_lock:
            self._peers.pop(kid, None)


def _peer_from_record(record: DeviceRecord) -> _Peer:
    assert record.signing_jwk is not None and record.encryption_jwk is not None  # noqa: S101
    assert record.suite is not None  # noqa: S101
    verifying = VerifyingKey.from_jwk(record.signing_jwk)
    return _Peer(
        device_id=record.device_id,
        sender=SenderInfo(
            id=record.device_id, verifying_key=verifying, suite=Suite.from_json(record.suite)
        ),
        encryption_key=EncryptionKey.from_jwk(record.encryption_jwk),
        current_kid=verifying.kid,
    )
