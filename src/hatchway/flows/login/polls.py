"""Cheap polling of PENDING device logins (RFC 8628 §3.4–3.5), kept in process memory.

Almost every token request in a device login is a poll of a session nobody has
decided yet, answered ``authorization_pending``. Storing each one's
``last_poll_at`` made every poll an fsync'd compare-and-set; yet such a poll
changes nothing that must outlive the process. So, for PENDING sessions:

1. **Poll timing lives here.** The last *accepted* poll and the current interval
   of each pending session are held in a bounded LRU map. An accepted pending
   poll writes nothing. ``slow_down`` is still decided by
   :func:`hatchway.login.poll` from the last accepted poll, and the grown
   interval (+5 s, §3.5 "for this and all subsequent requests") *is* written
   through the store's compare-and-set at once, so it survives restarts and is
   seen by every replica.
2. **Snapshots answer repeat polls without the store**, but only while a
   *decision feed* is live: :func:`follow_decisions` listens on
   :data:`DECISIONS_CHANNEL`, on which every approval, denial, expiry and token
   issue is announced (by whichever replica made it), and drops the snapshot;
   :data:`~hatchway.bus.RESYNC` (a bus listener that lost notifications) drops
   them all. A snapshot is also re-read at least every ``revalidate_after``
   seconds, which bounds the harm of any missed announcement. A snapshot can
   only ever answer ``authorization_pending``: tokens, denial and expiry always
   come from the store, through its compare-and-set transitions, so staleness
   can delay a device, never let one through. Expiry is checked against the
   snapshot's ``expires_at``, which never changes.

With shared limits (``HATCHWAY_REDIS_URL``), the last accepted poll is also
marked in Redis by one atomic gate per poll (:meth:`hatchway.limits.Limits.gate`,
awaited on the event loop by the fast path), so a poll accepted by one replica
makes the same device's next poll too soon on every replica.

Trade-offs, documented in docs/login.md:

* Without shared limits each replica knows only the polls it accepted. A device
  that alternates between R replicas can poll each at the interval, R times the
  rate overall, before it is told ``slow_down`` (once it is, the grown interval
  is shared).
* After a restart, or when the map evicts the session (more than
  ``max_entries`` pending sessions), the first poll is accepted whatever its
  timing: the stored ``last_poll_at`` dates from the last ``slow_down`` only.
* A race between reading a snapshot and a decision is closed by an epoch
  counter: a snapshot read before the newest announcement is not trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass

from hatchway.bus import RESYNC, Bus
from hatchway.login import LoginSession, SessionState

DECISIONS_CHANNEL = "hw_login_decided"
"""Bus channel announcing every login decision; the payload is the session reference."""

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_REVALIDATE_AFTER = 60.0


@dataclass(slots=True)
class _Timing:
    """One pending session's poll state; mutable, and only touched under the lock."""

    reference: str
    client_id: str
    expires_at: float
    last_poll_at: float | None
    interval: int
    read_at: float
    trusted: bool
    """The snapshot may answer without the store (see the module docstring)."""


class PendingPolls:
    """Poll timing and snapshots of pending sessions, bounded, thread-safe."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        revalidate_after: float = DEFAULT_REVALIDATE_AFTER,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.revalidate_after = revalidate_after
        self._entries: OrderedDict[bytes, _Timing] = OrderedDict()
        self._by_ref: dict[str, bytes] = {}
        # The fast path runs on the event loop, the store path in worker threads.
        self._lock = threading.Lock()
        self._epoch = 0
        self._feeds = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def epoch(self) -> int:
        """Take before reading the store; pass to :meth:`remember`."""
        return self._epoch

    @property
    def trusting(self) -> bool:
        """Whether a decision feed is live, so snapshots may answer polls."""
        return self._feeds > 0

    def accept(self, device_code_hash: bytes, client_id: str, now: float) -> bool:
        """Accept a poll of a known pending session from memory alone, if possible.

        True means: the session is pending, not due, owned by ``client_id``, the
        poll is not too soon (so :func:`~hatchway.login.poll` would answer
        ``authorization_pending``), and it is now the last accepted poll. False
        means "ask the store", never a refusal.
        """
        with self._lock:
            entry = self._entries.get(device_code_hash)
            if (
                entry is None
                or not entry.trusted
                or now - entry.read_at >= self.revalidate_after
                or now < entry.read_at  # a clock that went back: trust nothing
                or entry.client_id != client_id
                or now >= entry.expires_at
                or (entry.last_poll_at is not None and now < entry.last_poll_at + entry.interval)
            ):
                return False
            entry.last_poll_at = now
            self._entries.move_to_end(device_code_hash)
            return True

    def timing(self, device_code_hash: bytes) -> tuple[int, float] | None:
        """The known session's current interval and deadline, if this process knows it."""
        with self._lock:
            entry = self._entries.get(device_code_hash)
            return None if entry is None else (entry.interval, entry.expires_at)

    def merge(self, stored: LoginSession) -> LoginSession:
        """``stored`` with the poll timing this process knows, whichever is later/larger."""
        with self._lock:
            entry = self._entries.get(stored.device_code_hash)
            if entry is None:
                return stored
            last = stored.last_poll_at
            if entry.last_poll_at is not None and (last is None or entry.last_poll_at > last):
                last = entry.last_poll_at
            interval = max(stored.interval, entry.interval)
        if last == stored.last_poll_at and interval == stored.interval:
            return stored
        return dataclasses.replace(stored, last_poll_at=last, interval=interval)

    def remember(self, session: LoginSession, *, epoch: int, now: float) -> None:
        """Keep ``session``'s timing (as decided) if it is still pending; else forget it.

        ``epoch`` is :attr:`epoch` as taken before the store was read: if a
        decision was announced since, the snapshot may predate it and is kept
        for its timing only.
        """
        key = session.device_code_hash
        with self._lock:
            if session.state is not SessionState.PENDING:
                self._drop(key)
                return
            entry = self._entries.get(key)
            last, interval = session.last_poll_at, session.interval
            if entry is not None:
                # Concurrent polls of one device: never move timing backwards.
                if entry.last_poll_at is not None and (last is None or entry.last_poll_at > last):
                    last = entry.last_poll_at
                interval = max(interval, entry.interval)
                reference = entry.reference
            else:
                reference = session.reference
            self._entries[key] = _Timing(
                reference=reference,
                client_id=session.client_id,
                expires_at=session.expires_at,
                last_poll_at=last,
                interval=interval,
                read_at=now,
                trusted=self._feeds > 0 and epoch == self._epoch,
            )
            self._by_ref[reference] = key
            self._entries.move_to_end(key)
            self._evict(now)

    def forget(self, reference: str) -> None:
        """A decision on this session was announced: stop answering it from memory.

        The timing is kept: an approved session awaiting its match number is
        still subject to ``slow_down``.
        """
        with self._lock:
            self._epoch += 1
            key = self._by_ref.get(reference)
            entry = None if key is None else self._entries.get(key)
            if entry is not None:
                entry.trusted = False

    def distrust_all(self) -> None:
        """Announcements may have been lost (RESYNC, or the feed stopped)."""
        with self._lock:
            self._epoch += 1
            for entry in self._entries.values():
                entry.trusted = False

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._by_ref.pop(entry.reference, None)

    def _evict(self, now: float) -> None:
        # Least recently polled first; sessions past their deadline go first
        # of all, as they are found at the old end.
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if len(self._entries) <= self.max_entries and now < oldest.expires_at:
                return
            self._drop(key)

    # --- the decision feed ------------------------------------------------------

    def _feed_started(self) -> None:
        with self._lock:
            self._feeds += 1

    def _feed_stopped(self) -> None:
        with self._lock:
            self._feeds -= 1
        self.distrust_all()


async def follow_decisions(bus: Bus, polls: PendingPolls) -> None:
    """Drop snapshots as decisions are announced, from any replica, until cancelled.

    Subscribing comes first, trusting second: an announcement made after the
    subscription is registered cannot be missed, and snapshots read earlier
    were taken untrusted.
    """
    with bus.subscribe(DECISIONS_CHANNEL) as sub:
        polls._feed_started()
        try:
            async for payload in sub:
                if payload == RESYNC:
                    polls.distrust_all()
                else:
                    polls.forget(payload)
        finally:
            polls._feed_stopped()


def start_decision_feed(bus: Bus, polls: PendingPolls) -> asyncio.Task[None]:
    """Run :func:`follow_decisions` as a task of the running loop."""
    task = asyncio.get_running_loop().create_task(follow_decisions(bus, polls))
    task.add_done_callback(_ignore_cancel)
    return task


def _ignore_cancel(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
