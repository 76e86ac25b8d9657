"""Group commit: writer threads fed by a queue, one transaction and one fsync per batch.

Issue 10 §1. Before this, every sealed message took its own write transaction, and
SQLite (``synchronous=FULL``) or PostgreSQL fsync'd each commit: the server ran at
the disk's commit rate, and concurrency bought nothing because writers queue on
one lock. Here the callers (the event loop, or transport threads) open and verify
their message first, then hand the replay check and insert to a writer thread through
a queue. The writer takes everything queued (up to ``max_batch``), accepts it in one
transaction through :meth:`Store.accept_batch`, commits, and only *then* resolves
each caller's future. The caller seals its acknowledgement after that, so an
acknowledged message is always a committed one: "acknowledged ⇒ stored" survives
kill -9 exactly as before, and a replay is refused after a restart because the
window and ``jti`` rows commit with the message.

Under light load a batch holds one message and the latency is one commit, as
before; under load the batch grows with the queue, so the commit cost is shared.

Requests are sorted by device (stably, so one device's messages keep their order)
before the batch runs: on PostgreSQL every batch then takes its row locks in the
same order, so two batches (two writers here, or two replicas) cannot deadlock on
each other. PostgreSQL gets two writers by default: measured on this machine, a batch
of 32 takes about 32 ms there (commit round trip included), so one writer alone would
cap ingest near 1,000 msg/s with 32 connections. Two batches holding messages of the
same device serialise on that device's window row; the second then sees the first's
committed window, ``jti`` and ``mid`` rows (READ COMMITTED re-reads after the lock),
and a device's messages may commit out of order, which the replay window allows.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from hatchway.store import AcceptRequest, AcceptResult, Store

log = logging.getLogger("hatchway.ingest")

#: Large enough to amortise a commit, small enough that a batch's transaction (and
#: SQLite's write lock) is short and one bad batch costs little to retry.
DEFAULT_MAX_BATCH = 256


def default_writers(store: Store) -> int:
    """One writer on SQLite (one write lock per file: a second writer would only queue);
    two on PostgreSQL, so that one batch's commit round trip overlaps the next batch."""
    return 2 if store.engine.dialect.name == "postgresql" else 1


class Committer(Protocol):
    """What ``MessageService`` needs of a group committer: this module's, in process,
    or ``remote.RemoteCommitter``, which hands the work to the writer that every
    worker process of ``hatchway serve --workers N`` shares."""

    def submit(self, request: AcceptRequest) -> Future[AcceptResult]: ...

    def accept(self, request: AcceptRequest) -> AcceptResult: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Item:
    request: AcceptRequest
    future: Future[AcceptResult]


class GroupCommitter:
    """Accepts messages into the store in batches; thread-safe, started lazily."""

    def __init__(
        self, store: Store, *, max_batch: int = DEFAULT_MAX_BATCH, writers: int | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if writers is None:
            writers = default_writers(store)
        if writers < 1:
            raise ValueError("writers must be at least 1")
        self.store = store
        self.max_batch = max_batch
        self.writers = writers
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: Batches committed and messages in them (for logs and the benchmark).
        self.batches = 0
        self.messages = 0

    def submit(self, request: AcceptRequest) -> Future[AcceptResult]:
        """Queue ``request``; the future resolves after its batch has committed.

        Its result is the :class:`AcceptResult`; its exception is the item's refusal
        (see :meth:`Store.accept_batch`) or, when the whole batch failed, that error.
        """
        future: Future[AcceptResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the group committer is closed")
            if not self._threads:
                for n in range(self.writers):
                    thread = threading.Thread(
                        target=self._run, name=f"hatchway-group-commit-{n}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
            self._queue.put(_Item(request, future))
        return future

    def accept(self, request: AcceptRequest) -> AcceptResult:
        """:meth:`submit` and wait: returns once the message is durable."""
        return self.submit(request).result()

    def commit_now(self, requests: list[AcceptRequest]) -> list[Future[AcceptResult]]:
        """Accept ``requests`` in one transaction in the calling thread, for a caller that
        gathers its own batches (``remote.CommitHub``); same rules as a queued batch,
        and every future is resolved when this returns."""
        items = [_Item(request, Future()) for request in requests]
        self._commit(list(items))
        return [item.future for item in items]

    def close(self) -> None:
        """Commit what is queued, then stop the writers."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)  # one stop mark per writer
        for thread in threads:
            thread.join()
        if self.batches:
            log.info(
                "group commit: %d messages in %d batches",
                self.messages,
                self.batches,
                extra={"per_batch": round(self.messages / self.batches, 1)},
            )

    # -- the writer ------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._commit(batch)
            except BaseException:  # a bug here must not leave callers waiting forever
                log.exception("group commit writer failed on a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(RuntimeError("group commit failed"))

    def _commit(self, batch: list[_Item]) -> None:
        # A caller that gave up (its asyncio task was cancelled, which cancels the
        # future) is dropped here: not stored, not acknowledged. From this call on the
        # others' futures can no longer be cancelled, so resolving them cannot fail.
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not batch:
            return
        batch.sort(key=lambda item: item.request.device_id)  # stable: per-device order kept
        try:
            outcomes = self.store.accept_batch([item.request for item in batch])
        except BaseException as exc:
            # No caller is acknowledged: each sees the failure (a 5xx, which devices
            # retry). Had the commit itself landed before the error, the retry's
            # ``mid`` finds the stored message and is acknowledged, not stored twice.
            log.warning("batch of %d failed: %s", len(batch), type(exc).__name__)
            for item in batch:
                item.future.set_exception(exc)
            return
        with self._lock:
            self.batches += 1
            self.messages += len(batch)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, AcceptResult):
                item.future.set_result(outcome)
            else:
                item.future.set_exception(outcome)
