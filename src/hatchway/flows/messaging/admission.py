"""The store step: refuse what must leave no trace, then replay-check and store.

The replay check, the ``jti`` record and the stored message commit in one store
transaction through the group committer (issue 10 §1), so a crash or restart can
neither lose an accepted message nor let a replay in. A retransmission (same ``mid``,
fresh ``seq``/``jti``) is acknowledged as a duplicate, not stored twice.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TypeGuard

from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows import firmware as fw
from hatchway.flows.ingest.window import window_advance
from hatchway.flows.messaging.dispatch import Dispatch
from hatchway.flows.messaging.peers import _Peer
from hatchway.msgsec import Message, MessageType
from hatchway.store import AcceptRequest, AcceptResult, UnknownDevice

log = logging.getLogger("hatchway.messages")


#: A message id is a retransmission key; devices use 32 hex digits.
MAX_MID_LENGTH = 64
#: Command ids and jtis the server mints (hex today; base64url tolerated).
_SERVER_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
#: Expired ``jti`` entries can no longer be replayed (the message itself has expired),
#: so they are purged; this bounds the table by the traffic of one message lifetime.
JTI_PURGE_INTERVAL = 60.0


class _Revoked(Exception):
    """The store refused a cached sender as not enrolled (nothing was stored): it may
    have been revoked meanwhile, and then gets the notice, or have rotated its keys
    through another replica, and then its message is taken under a fresh look-up
    (``_after_refusal``, in a worker thread)."""

    def __init__(self, peer: _Peer) -> None:
        super().__init__(peer.device_id)
        self.peer = peer


class Admission(Dispatch):
    """Precheck, accept through the committer, and purge expired ``jti`` entries."""

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

    def _purge_expired(self, now: float) -> None:
        """Forget replay-cache entries whose message has expired, at most once a minute."""
        with self._peers_lock:
            if now < self._next_purge:
                return
            self._next_purge = now + JTI_PURGE_INTERVAL
        removed = self.store.purge_expired_jti(now=now)
        if removed:
            log.info("purged %d expired jti entries", removed)


def _check_mid(message: Message) -> None:
    mid = message.body.get("mid")
    if mid is not None and not (isinstance(mid, str) and 0 < len(mid) <= MAX_MID_LENGTH):
        raise InvalidMessage("mid missing, empty or too long")


def _is_server_id(value: object) -> TypeGuard[str]:
    """A command id (uuid4 hex) or message jti (random hex) as this server mints them."""
    return isinstance(value, str) and _SERVER_ID.fullmatch(value) is not None
