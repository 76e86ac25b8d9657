"""One group-commit writer for every worker process (``hatchway serve --workers N``).

Issue 10 §1. Each worker process opens and verifies its messages and seals their
acknowledgements; the store step of all of them goes to one writer thread in the
supervisor process, over a private socket pair per worker (:class:`CommitHub` there,
:class:`RemoteCommitter` in the worker), which commits each round of requests in one
transaction with :meth:`GroupCommitter.commit_now`.

Why not a writer per worker: measured with a group committer in each of two workers
on one SQLite file, two workers ingested about half what one did. The file has one
write lock; a writer thread holds it from ``BEGIN IMMEDIATE`` to ``COMMIT``, and
between its ~10 statements it must win back its process's GIL from the event loop,
which is busy with the cryptography, so every batch held the lock for about 9 ms
instead of about 1 ms, and the other worker's writer waited. Batches were small too
(about 3 messages), because each writer saw only its own worker's messages. The
shared writer runs in a process that does no cryptography, and its batches hold the
messages of every worker. PostgreSQL gets the same design: one writer per server
(where one process runs two, overlapping commit round trips); its batches grow while
a commit is in flight. What it costs per message is in docs/benchmarks.md.

Durability is unchanged: the hub answers a request only after the batch holding it
has committed, and the worker seals the acknowledgement only after that answer.
A worker that dies with requests in flight leaves them committed but unacknowledged,
so a device retransmits with the same ``mid`` and gets a duplicate's ack. When the
supervisor dies every worker's pending request fails (a 5xx: nothing acknowledged).

The link carries our own processes' JSON arrays (no peer input: the worker built
them from a message it had already opened and checked):
request ``[id, device_id, seq, jti, exp, mid, typ, body_json, now, signing_kid]``;
answer ``[id, 0, duplicate, message_id, reply_seq]`` (accepted),
``[id, 1, kind, detail]`` (refused, as the store would refuse it in process) or
``[id, 2, error_type]`` (the whole batch failed); the hub sends one frame per batch
and worker, a JSON array of those answers.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import Connection, wait
from typing import Any

import orjson

from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows.ingest.committer import GroupCommitter
from hatchway.flows.ingest.window import window_advance
from hatchway.store import AcceptRequest, AcceptResult, ReplayedJti, Store, UnknownDevice

log = logging.getLogger("hatchway.ingest")

_ACCEPTED, _REFUSED, _FAILED = 0, 1, 2

#: Refusals a batch item can carry (store.messages.ITEM_ERRORS), by wire name.
_REFUSALS: dict[str, Callable[[str], Exception]] = {
    "replayed_jti": lambda _detail: ReplayedJti(),
    "invalid": lambda detail: InvalidMessage(detail),
    "unknown_device": UnknownDevice,
    "store": HatchwayError,
    "value": ValueError,
    "type": TypeError,
}


def _refusal_kind(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ReplayedJti):
        return "replayed_jti", ""
    if isinstance(exc, InvalidMessage):
        return "invalid", exc.reason
    if isinstance(exc, UnknownDevice):
        return "unknown_device", str(exc)
    if isinstance(exc, HatchwayError):
        return "store", str(exc)
    return ("type" if isinstance(exc, TypeError) else "value"), str(exc)


class RemoteCommitter:
    """The worker's side: :class:`GroupCommitter`'s interface, over the link."""

    def __init__(self, link: Connection) -> None:
        self._link = link
        self._send = threading.Lock()
        self._pending: dict[int, Future[AcceptResult]] = {}
        self._ids = itertools.count()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="hatchway-commit-link", daemon=True)
        self._reader.start()

    def submit(self, request: AcceptRequest) -> Future[AcceptResult]:
        # Checked and serialised here, in the worker: a bad id is refused before it
        # leaves, and the writer does not re-serialise the body.
        body = request.checked_body()
        future: Future[AcceptResult] = Future()
        rid = next(self._ids)
        frame = orjson.dumps(
            [
                rid,
                request.device_id,
                request.seq,
                request.jti,
                request.exp,
                request.mid,
                request.typ,
                body,
                request.now,
                request.signing_kid,
            ]
        )
        with self._send:
            if self._closed:
                raise RuntimeError("the link to the shared writer is closed")
            self._pending[rid] = future
            try:
                self._link.send_bytes(frame)
            except OSError:
                del self._pending[rid]
                raise
        return future

    def accept(self, request: AcceptRequest) -> AcceptResult:
        return self.submit(request).result()

    def close(self) -> None:
        with self._send:
            self._closed = True
        # Closing the descriptor does not wake a thread blocked reading it; shutting
        # the socket down does (the reader sees end of file).
        with socket.socket(fileno=os.dup(self._link.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self._link.close()

    def _read(self) -> None:
        while True:
            try:
                answers = orjson.loads(self._link.recv_bytes())  # one frame per batch
            except (EOFError, OSError):
                break
            for answer in answers:
                with self._send:
                    future = self._pending.pop(answer[0], None)
                if future is not None:
                    _resolve(future, answer)
        with self._send:
            self._closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the shared writer went away"))


def _resolve(future: Future[AcceptResult], answer: list[Any]) -> None:
    try:
        if answer[1] == _ACCEPTED:
            future.set_result(AcceptResult(answer[2], answer[3], answer[4]))
        elif answer[1] == _REFUSED:
            future.set_exception(_REFUSALS[answer[2]](answer[3]))
        else:
            future.set_exception(RuntimeError(f"group commit failed: {answer[2]}"))
    except InvalidStateError:
        pass  # the caller gave up (cancelled): committed, never acknowledged


class CommitHub:
    """The supervisor's side: one thread reads every worker's link and commits.

    Each round takes everything the links hold (up to ``max_batch``), accepts it in one
    transaction (``GroupCommitter.commit_now``: the same rules as in process), and
    sends each worker one frame with all its answers. No thread hand-off per message:
    a first version with a reader thread per link feeding the group committer's writer
    thread spent more of the supervisor's CPU on waking threads than on the batches.
    """

    def __init__(self, store: Store, *, window_size: int, max_batch: int = 256) -> None:
        self.store = store
        self.window_size = window_size
        self.max_batch = max_batch
        self.committer = GroupCommitter(store, max_batch=max_batch)
        self._links: list[Connection] = []
        self._lock = threading.Lock()
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="hatchway-commit-hub", daemon=True)
        self._thread.start()

    @property
    def batches(self) -> int:
        return self.committer.batches

    def serve(self, link: Connection) -> None:
        """Answer ``link``'s requests until the worker at its other end goes away."""
        with self._lock:
            self._links.append(link)
        self._wake_w.send(b"\0")

    def close(self) -> None:
        """After the workers have stopped: commit and answer what has arrived, then stop."""
        with self._lock:
            self._closing = True
        self._wake_w.send(b"\0")
        self._thread.join(timeout=30)
        self._wake_r.close()
        self._wake_w.close()
        self.committer.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                links, closing = list(self._links), self._closing
            ready = wait([*links, self._wake_r], timeout=0 if closing else None)
            if self._wake_r in ready:
                self._wake_r.recv(4096)
            batch: list[tuple[Connection, int, AcceptRequest]] = []
            for link in links:
                if link in ready or closing:
                    self._take(link, batch)
            if batch:
                self._commit(batch)
            if closing and not batch:
                for link in links:
                    self._drop(link)
                return

    def _take(self, link: Connection, batch: list[tuple[Connection, int, AcceptRequest]]) -> None:
        try:
            while len(batch) < self.max_batch and link.poll():
                rid, request = self._request(orjson.loads(link.recv_bytes()))
                batch.append((link, rid, request))
        except (EOFError, OSError):
            self._drop(link)  # the worker is gone
        except (ValueError, TypeError, IndexError):
            log.exception("a worker sent a malformed commit request; link closed")
            self._drop(link)

    def _drop(self, link: Connection) -> None:
        with self._lock:
            if link in self._links:
                self._links.remove(link)
        link.close()

    def _request(self, item: list[Any]) -> tuple[int, AcceptRequest]:
        rid, device_id, seq, jti, exp, mid, typ, body, now, kid = item
        request = AcceptRequest(
            device_id,
            seq=seq,
            jti=jti,
            exp=exp,
            mid=mid,
            typ=typ,
            body={},
            now=now,
            advance=window_advance(seq, self.window_size),
            signing_kid=kid,
            body_text=body,
        )
        return int(rid), request

    def _commit(self, batch: list[tuple[Connection, int, AcceptRequest]]) -> None:
        futures = self.committer.commit_now([request for _, _, request in batch])
        answers: dict[Connection, list[list[Any]]] = {}
        for (link, rid, _), done in zip(batch, futures, strict=True):
            answers.setdefault(link, []).append(_answer(rid, done))
        for link, items in answers.items():
            if link.closed:
                continue  # the worker is gone: stored, unacknowledged; the device retries
            try:
                link.send_bytes(orjson.dumps(items))
            except OSError:
                self._drop(link)


def _answer(rid: int, done: Future[AcceptResult]) -> list[Any]:
    exc = done.exception()
    if exc is None:
        r = done.result()
        return [rid, _ACCEPTED, r.duplicate, r.message_id, r.reply_seq]
    if isinstance(exc, (HatchwayError, ValueError, TypeError)):
        return [rid, _REFUSED, *_refusal_kind(exc)]
    return [rid, _FAILED, type(exc).__name__]
