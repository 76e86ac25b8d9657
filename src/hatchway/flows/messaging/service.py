"""MessageService: the two entry points that open a sealed message and answer it.

``handle`` is for threaded transports (plain HTTP); ``handle_async`` for transports on
an event loop (the MQTT gateway), which keeps telemetry from a cached sender on the
loop and sends everything else to a worker thread. Both open and verify the message,
then run the same pipeline: admission, dispatch, seal.
"""

from __future__ import annotations

import asyncio
import logging

from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows.messaging.admission import _Revoked
from hatchway.flows.messaging.peers import _Peer
from hatchway.flows.messaging.revocation import Revocation
from hatchway.msgsec import Message, MessageType, SenderInfo, open_message

log = logging.getLogger("hatchway.messages")


class _NotCached(Exception):
    """The sender's key is not cached: finish in a thread, which may ask the store."""


class MessageService(Revocation):
    """Open, check, store and answer sealed messages (transport-agnostic)."""

    def handle(self, token: bytes, *, sender: str | None = None) -> bytes:
        """Open, check, store and answer one sealed message.

        ``sender``: the device the transport says this came from (an MQTT uplink topic
        names one). A message signed by any other device is refused before anything is
        stored: it was forged or replayed onto that topic.
        """
        return self._handle(token, sender, retry=True)

    def _handle(self, token: bytes, sender: str | None, *, retry: bool) -> bytes:
        now = self.clock()
        if self.keyring.due(now):
            self.keyring.refresh(now, force=False)
        peers: dict[str, _Peer] = {}

        def resolve(kid: str) -> SenderInfo | None:
            peer = self._peer(kid)
            if peer is None or not self._live(peer, now):
                return None
            if sender is not None and peer.device_id != sender:
                peers["misrouted"] = peer
                return None
            peers["it"] = peer
            return peer.sender

        try:
            message, _ = open_message(
                token,
                decryption_keys=self.keyring.decryption_keys,
                resolve_sender=resolve,
                policy=self._policy,
                now=now,
            )
            peer = self._sealed_to(peers["it"], token, now)
        except InvalidMessage as exc:
            if retry and self.keyring.refresh_for(token, now):
                return self._handle(token, sender, retry=False)
            _log_rejection(exc, peers.get("misrouted"), sender)
            raise
        return self._finish(peer, message, now)

    async def handle_async(self, token: bytes, *, sender: str | None = None) -> bytes:
        """``handle`` for transports on an event loop; same replies, same refusals
        (``sender`` as for ``handle``: the MQTT gateway names the topic's device).

        Telemetry from a sender whose key is cached, the bulk of ingest, never leaves
        the loop: it is opened here, its store step awaits the group commit, and its
        ack is sealed here once the batch is durable. Thread hand-offs cost more than
        the cryptography they would run (the GIL serialises it anyway). Everything that
        may touch the store on its own (a key-cache miss, polls, command results,
        de-registration, the periodic jti purge) runs in a worker thread.
        """
        now = self.clock()
        if self.keyring.due(now):
            await asyncio.to_thread(self.keyring.refresh, now, force=False)
        found: dict[str, _Peer] = {}

        def cached(kid: str) -> SenderInfo | None:
            with self._peers_lock:
                peer = self._peers.get(kid)
                if peer is not None:
                    self._peers.move_to_end(kid)
            if peer is None:
                raise _NotCached
            if sender is not None and peer.device_id != sender:
                found["misrouted"] = peer
                return None
            if not self._live(peer, now):
                return None
            found["it"] = peer
            return peer.sender

        try:
            message, _ = open_message(
                token,
                decryption_keys=self.keyring.decryption_keys,
                resolve_sender=cached,
                policy=self._policy,
                now=now,
            )
            peer = self._sealed_to(found["it"], token, now)
        except _NotCached:
            return await asyncio.to_thread(self.handle, token, sender=sender)
        except InvalidMessage as exc:
            if self.keyring.may_refresh_for(token, now):
                # Perhaps a rotation this replica has not read yet: ``handle`` re-reads.
                return await asyncio.to_thread(self.handle, token, sender=sender)
            _log_rejection(exc, found.get("misrouted"), sender)
            raise
        if message.typ is not MessageType.TELEMETRY:
            return await asyncio.to_thread(self._finish, peer, message, now)
        try:
            return await self._telemetry_async(peer, message, now)
        except _Revoked as refused:
            try:
                return await asyncio.to_thread(self._after_refusal, refused.peer, message, now)
            except InvalidMessage as exc:
                log.warning("message rejected: %s", exc.reason or "unspecified")
                raise

    async def _telemetry_async(self, peer: _Peer, message: Message, now: float) -> bytes:
        try:
            self._precheck(peer, message)
            try:
                future = self.committer.submit(self._accept_request(peer, message, now))
                result = await asyncio.wrap_future(future)
            except (HatchwayError, ValueError) as exc:
                raise self._refused(peer, exc) from None
            accepted = self._accepted(peer, message, result)
            reply = self._dispatch(peer, message, now, accepted)
        except InvalidMessage as exc:
            log.warning("message rejected: %s", exc.reason or "unspecified")
            raise
        if now >= self._next_purge:
            await asyncio.to_thread(self._purge_expired, now)
        return reply if isinstance(reply, bytes) else self._seal(peer, reply)

    def _finish(self, peer: _Peer, message: Message, now: float) -> bytes:
        """``handle`` after the message was opened."""
        try:
            if peer.revoked:
                return self._notice(peer, message, now)
            self._precheck(peer, message)
            try:
                accepted = self._accept(peer, message, now)
            except _Revoked:
                return self._after_refusal(peer, message, now)
            reply = self._dispatch(peer, message, now, accepted)
        except InvalidMessage as exc:
            log.warning("message rejected: %s", exc.reason or "unspecified")
            raise
        self._purge_expired(now)
        return reply if isinstance(reply, bytes) else self._seal(peer, reply)


def _log_rejection(exc: InvalidMessage, misrouted: _Peer | None, sender: str | None) -> None:
    reason = exc.reason or "unspecified"
    if misrouted is not None:
        reason = f"signed by {misrouted.device_id!r}, sent as {sender!r}"
    log.warning("message rejected: %s", reason)
