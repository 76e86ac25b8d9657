"""Sealed messages after TLS: US 11,546,310 B2 claim step 5 and claims 2–5, server side.

Transport-agnostic: ``MessageService.handle`` takes the sealed token bytes from any
transport (plain HTTP today, MQTT later) and returns the sealed reply bytes. Every
failure raises the opaque ``InvalidMessage``; the real reason is logged here and
never sent back.

The replay check, the ``jti`` record and the stored message commit in one store
transaction, so a crash or restart can neither lose an accepted message nor let a
replay in. A device that retries after a lost reply re-seals the same payload with a
fresh ``seq``/``jti`` but the same ``mid``; the store then acknowledges the duplicate
instead of storing it twice.

A poll is answered by at most one command delivery: the store picks the command,
and keeps the sealed reply under the poll's ``mid``, in one transaction, so a
retransmitted or held-back-and-released poll gets the same bytes again and a
command is never handed out twice while a delivery of it is unexpired.

Many transport threads call ``handle`` at once: each opens and verifies its message
itself, then the store step goes through one :class:`GroupCommitter`, which commits
the messages queued meanwhile in one transaction and wakes each caller only after
that commit (issue 10 §1). ``handle`` keeps its signature and its semantics.

A device the operator revoked (:mod:`hatchway.flows.deregistration`) is answered,
once, with a sealed ``DEREGISTERED`` notice instead; nothing of its message is stored,
and everything after the notice is refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from hatchway.config import Settings
from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows import firmware as fw
from hatchway.flows.deregistration import notice_body
from hatchway.flows.ingest.committer import DEFAULT_MAX_BATCH, Committer, GroupCommitter
from hatchway.flows.ingest.window import window_advance
from hatchway.flows.keyring import KeyGeneration, ServerKeyring
from hatchway.flows.keyrotation import DeviceKeyRotation, rotated_body
from hatchway.msgsec import (
    EncryptionKey,
    Message,
    MessageType,
    OpenPolicy,
    SenderInfo,
    Suite,
    VerifyingKey,
    open_message,
    seal,
)
from hatchway.msgsec.rotation import server_keys_body
from hatchway.runtime import Clock, Random
from hatchway.server.datadir import ServerIdentity
from hatchway.store import (
    AcceptRequest,
    AcceptResult,
    CommandRecord,
    CommandStatus,
    DeviceRecord,
    DeviceStatus,
    InvalidTransition,
    SealedDelivery,
    Store,
    UnknownCommand,
    UnknownDevice,
)

log = logging.getLogger("hatchway.messages")

#: A message id is a retransmission key; devices use 32 hex digits.
MAX_MID_LENGTH = 64
#: Command ids and jtis the server mints (hex today; base64url tolerated).
_SERVER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
#: Expired ``jti`` entries can no longer be replayed (the message itself has expired),
#: so they are purged; this bounds the table by the traffic of one message lifetime.
JTI_PURGE_INTERVAL = 60.0

#: Kinds a device may send to the server; everything else is refused at the door.
INBOUND = frozenset(
    {
        MessageType.TELEMETRY,
        MessageType.POLL,
        MessageType.COMMAND_RESULT,
        MessageType.DEREGISTER,
        MessageType.KEY_ROTATE,
        MessageType.FIRMWARE_REPORT,
    }
)


class _NotCached(Exception):
    """The sender's key is not cached: finish in a thread, which may ask the store."""


class _Revoked(Exception):
    """The store refused a cached sender as not enrolled (nothing was stored): it may
    have been revoked meanwhile, and then gets the notice, or have rotated its keys
    through another replica, and then its message is taken under a fresh look-up
    (``_after_refusal``, in a worker thread)."""

    def __init__(self, peer: _Peer) -> None:
        super().__init__(peer.device_id)
        self.peer = peer


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


class MessageService:
    def __init__(
        self,
        *,
        store: Store,
        identity: ServerIdentity,
        settings: Settings,
        clock: Clock,
        random: Random,
        cache_size: int = 4096,
        max_batch: int = DEFAULT_MAX_BATCH,
        keyring: ServerKeyring | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.settings = settings
        self.clock = clock
        self.random = random
        self.server_id = settings.issuer
        self.keyring = keyring or ServerKeyring(
            store,
            identity,
            clock=clock,
            random=random,
            refresh_interval=settings.server_key_refresh,
        )
        self.rotation = DeviceKeyRotation(store=store, identity=identity, settings=settings)
        self._policy = OpenPolicy(
            audience=self.server_id,
            expected=INBOUND,
            max_size=settings.max_message_size,
        )
        # kid -> peer; enrolment and de-registration go through the store, so a miss
        # (or a stale entry on another replica) is resolved by asking the store again.
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._peers_lock = threading.Lock()
        self._cache_size = cache_size
        self._next_purge = 0.0
        #: In process; ``hatchway serve --workers N`` swaps in the shared writer's link.
        self.committer: Committer = GroupCommitter(store, max_batch=max_batch)
        self.offers = fw.Offers(store, random)

    def close(self) -> None:
        """Commit and acknowledge what is queued, then stop the writer thread."""
        self.committer.close()

    # -- sender lookup ------------------------------------------------------------------
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

    # -- the pipeline -------------------------------------------------------------------
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
            self.keyring.refresh(now)
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
            await asyncio.to_thread(self.keyring.refresh, now)
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

    def _precheck(self, peer: _Peer, message: Message) -> None:
        """Refuse before anything is stored: a refused message must leave no trace."""
        _check_mid(message)
        if message.typ is MessageType.COMMAND_RESULT:
            cid, irt = message.body.get("cid"), message.in_reply_to
            # Both are identifiers this server minted; anything else (over-long, not
            # text the store can hold) is refused before it reaches a query.
            if not _is_server_id(cid) or not _is_server_id(irt):
                raise InvalidMessage("result names no command delivery")
            # The result must answer a delivery of that command this device received.
            if not self.store.answers_delivery(peer.device_id, cid, irt):
                raise InvalidMessage(f"result for {cid!r} does not answer its delivery")
        elif message.typ is MessageType.KEY_ROTATE:
            signed_by = peer.sender.verifying_key
            previous = signed_by.kid != peer.current_kid
            self.rotation.precheck(
                peer.device_id, message, signed_by, peer.encryption_key, previous=previous
            )
        elif message.typ is MessageType.DEREGISTER and peer.until != math.inf:
            # A retiring key still carries data during the overlap, but may not end the
            # device: a thief of the old key could otherwise de-register it.
            raise InvalidMessage("de-registration signed by a retiring key")
        elif message.typ is MessageType.FIRMWARE_REPORT:
            fw.check_report_body(message.body)

    def _accept(self, peer: _Peer, message: Message, now: float) -> AcceptResult:
        """Replay-check and store the message, reserving the reply's sequence number."""
        try:
            # Returns once the batch holding this message has committed.
            result = self.committer.accept(self._accept_request(peer, message, now))
        except (HatchwayError, ValueError) as exc:
            raise self._refused(peer, exc) from None
        # Anything else (the database is down...) propagates as a 5xx, which the device
        # retries: refusing it as "invalid" would make the device drop the message.
        return self._accepted(peer, message, result)

    def _accept_request(self, peer: _Peer, message: Message, now: float) -> AcceptRequest:
        advance = window_advance(message.seq, self.settings.replay_window)
        mid = message.body.get("mid")
        return AcceptRequest(
            peer.device_id,
            seq=message.seq,
            jti=message.jti,
            exp=float(message.exp),
            mid=mid if isinstance(mid, str) else None,
            typ=message.typ.value,
            body=message.body,
            now=now,
            advance=advance,
            signing_kid=peer.current_kid,
        )

    def _refused(self, peer: _Peer, exc: HatchwayError | ValueError) -> Exception:
        if isinstance(exc, InvalidMessage):
            return exc
        # Reset, re-enrolled or de-registered meanwhile (possibly on another replica):
        # drop the cached key and give the same opaque answer as any other refusal.
        self.forget(peer.sender.verifying_key.kid)
        if isinstance(exc, UnknownDevice):
            return _Revoked(peer)  # perhaps: the store decides, off the event loop
        return InvalidMessage(f"store refused: {type(exc).__name__}: {exc}")

    def _accepted(self, peer: _Peer, message: Message, result: AcceptResult) -> AcceptResult:
        if result.duplicate:
            mid = message.body.get("mid")
            log.info("duplicate mid %s from %s acknowledged, not stored again", mid, peer.device_id)
        return result

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

    # -- revoked devices (flows/deregistration.py) -----------------------------------------
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

    def _purge_expired(self, now: float) -> None:
        """Forget replay-cache entries whose message has expired, at most once a minute."""
        with self._peers_lock:
            if now < self._next_purge:
                return
            self._next_purge = now + JTI_PURGE_INTERVAL
        removed = self.store.purge_expired_jti(now=now)
        if removed:
            log.info("purged %d expired jti entries", removed)

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

    # -- server-initiated (MQTT push later) ------------------------------------------------
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


def _log_rejection(exc: InvalidMessage, misrouted: _Peer | None, sender: str | None) -> None:
    reason = exc.reason or "unspecified"
    if misrouted is not None:
        reason = f"signed by {misrouted.device_id!r}, sent as {sender!r}"
    log.warning("message rejected: %s", reason)


def _check_mid(message: Message) -> None:
    mid = message.body.get("mid")
    if mid is not None and not (isinstance(mid, str) and 0 < len(mid) <= MAX_MID_LENGTH):
        raise InvalidMessage("mid missing, empty or too long")


def _is_server_id(value: object) -> TypeGuard[str]:
    """A command id (uuid4 hex) or message jti (random hex) as this server mints them."""
    return isinstance(value, str) and _SERVER_ID.fullmatch(value) is not None


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
