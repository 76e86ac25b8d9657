"""``hatchway serve --workers N``: N server processes on one plain port (issue 10 §1).

One process runs its Python, the cryptography included, under one GIL: measured at 32
connections it could not pass about one core (docs/benchmarks.md, "Ingest"). So the
sealed-message listener runs in N processes. The supervisor (the process ``hatchway
serve`` started) first prepares the data dir and the store once (keys, certificates,
schema migrations, default clients), so the workers never race to create them, then
spawns the workers: fresh interpreters (``spawn``), inheriting no thread, lock or
database connection. Each worker binds the plain port itself with ``SO_REUSEPORT`` and
the kernel spreads new connections over them. Each worker has its own
``MessageService`` (open, verify, seal), and hands the store step of its messages to
the one group-commit writer the supervisor runs for all of them
(``flows/ingest/remote.py`` says why one, and what was measured). The replay window,
``jti`` and ``mid`` checks stay in the store, in the transaction that stores the
message, so workers are replicas on one port. Only worker 0 runs HTTPS
(``run.WorkerRole`` says why).

A worker that exits while the server runs is logged as an error and replaced, so the
port keeps N listeners. A worker that fails before it is ready (a port taken, the
database unreachable), or workers that keep dying (``RESTART_LIMIT`` within
``RESTART_PERIOD``), stop the whole server with exit code 1: it is never left half-up
silently. SIGTERM or SIGINT stops every worker gracefully (each finishes its in-flight
requests), then the writer commits and answers what is queued, and the supervisor
exits 0. A supervisor
killed outright takes its workers with it: each asked the kernel for SIGTERM when its
parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from hatchway.config import Settings
from hatchway.flows.ingest.remote import CommitHub
from hatchway.server.logs import configure_logging
from hatchway.server.run import WorkerRole
from hatchway.store import Store

log = logging.getLogger("hatchway.server")

#: More unexpected worker exits than this within ``RESTART_PERIOD`` seconds stop the
#: server (exit 1) instead of restarting forever.
RESTART_LIMIT = 5
RESTART_PERIOD = 60.0
#: How long a worker may take to open the store and bind its listeners.
START_TIMEOUT = 120.0
#: How long a worker may take to finish in-flight requests after SIGTERM.
STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


def run_worker(
    settings: Settings, role: WorkerRole, parent: int, ready: Connection, link: Connection
) -> None:
    """A worker process's entry point: one ``run.serve`` in this role."""
    _die_with_parent(parent)
    import asyncio

    from hatchway.server.run import serve

    def on_ready(_ctx: object) -> None:
        ready.send(True)
        ready.close()

    asyncio.run(serve(settings, on_ready=on_ready, role=role, commit_link=link))


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the line above
        raise SystemExit(1)


def prepare(settings: Settings) -> CommitHub:
    """Create the data dir, keys and schema once, before any worker starts, and open
    the writer every worker's messages go through."""
    from hatchway.server.context import ServerContext

    ServerContext.create(settings).close()
    store = Store.open(settings.resolved_database_url)
    return CommitHub(store, window_size=settings.replay_window)


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._mp = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._restarts: list[float] = []
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._hub: CommitHub | None = None

    def run(self, on_ready: Callable[[], None]) -> int:
        """Serve until SIGTERM/SIGINT (returns 0) or an unrecoverable failure (1)."""
        configure_logging(self.settings.log_level)
        os.set_blocking(self._wake_w, False)
        previous = signal.set_wakeup_fd(self._wake_w)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._hub = prepare(self.settings)
            if not self._start(range(self.count)):
                return self._stop(failed=True)
            if self._stopping:
                return self._stop()
            log.info("workers ready", extra={"workers": self.count})
            on_ready()
            return self._supervise()
        finally:
            if any(proc.is_alive() for proc in self._workers.values()):
                self._stop(failed=True)  # an error above: no worker is left behind
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous)
            if self._hub is not None:
                self._hub.close()
                self._hub.store.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self._stopping:
            log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        self._stopping = True

    def _spawn(self, index: int) -> Connection:
        assert self._hub is not None  # noqa: S101
        ready_r, ready_w = self._mp.Pipe(duplex=False)
        link, worker_link = self._mp.Pipe(duplex=True)
        role = WorkerRole(index=index, count=self.count)
        proc = self._mp.Process(
            target=run_worker,
            args=(self.settings, role, os.getpid(), ready_w, worker_link),
            name=f"hatchway-worker-{index}",
        )
        proc.start()
        ready_w.close()
        worker_link.close()
        self._hub.serve(link)
        self._workers[index] = proc
        return ready_r

    def _start(self, indexes: range | list[int]) -> bool:
        """Start these workers and wait until each is ready; False if one died first."""
        pending = {self._spawn(i): i for i in indexes}
        deadline = time.monotonic() + START_TIMEOUT
        while pending and not self._stopping:
            watched = {self._workers[i].sentinel: i for i in pending.values()}
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                log.error("workers %s not ready in %.0fs", sorted(pending.values()), START_TIMEOUT)
                return False
            for ready in wait([*pending, *watched, self._wake_r], timeout):
                if ready == self._wake_r:
                    self._drain_wake()
                elif ready in watched:
                    index = watched[ready]
                    if any(i == index for i in pending.values()):
                        self._workers[index].join(5)
                        code = self._workers[index].exitcode
                        log.error("worker %d exited with %s before it was ready", index, code)
                        return False
                else:
                    assert isinstance(ready, Connection)  # noqa: S101
                    index = pending.pop(ready)
                    try:
                        ready.recv()
                    except EOFError:  # closed unsent: the worker died while starting
                        self._workers[index].join(5)
                        code = self._workers[index].exitcode
                        log.error("worker %d exited with %s before it was ready", index, code)
                        return False
                    finally:
                        ready.close()
        for conn in pending:
            conn.close()
        return True

    def _supervise(self) -> int:
        while not self._stopping:
            sentinels = {p.sentinel: i for i, p in self._workers.items()}
            for ready in wait([*sentinels, self._wake_r]):
                if ready == self._wake_r:
                    self._drain_wake()
                    continue
                index = sentinels[ready]  # type: ignore[index]
                self._workers[index].join(5)  # reap it: its sentinel fires just before
                code = self._workers[index].exitcode
                if self._stopping:
                    continue
                log.error("worker %d exited with %s; starting a new one", index, code)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_PERIOD]
                self._restarts.append(now)
                if len(self._restarts) > RESTART_LIMIT:
                    log.error(
                        "workers exited %d times in %.0fs: stopping the server",
                        len(self._restarts),
                        RESTART_PERIOD,
                    )
                    return self._stop(failed=True)
                if not self._start([index]):
                    return self._stop(failed=True)
                if not self._stopping:
                    log.warning("worker %d replaced", index)
        return self._stop()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 512)

    def _stop(self, *, failed: bool = False) -> int:
        """SIGTERM every worker, wait for them, kill what is left; the exit code."""
        self._stopping = True
        alive = [p for p in self._workers.values() if p.is_alive()]
        for proc in alive:
            proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in alive:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("%s did not stop in %.0fs: killed", proc.name, STOP_TIMEOUT)
                proc.kill()
                proc.join()
                failed = True
            elif proc.exitcode not in (0, -signal.SIGTERM):
                # -SIGTERM: stopped while starting, before it handled signals itself.
                failed = True
        log.info("stopped", extra={"workers": self.count})
        return 1 if failed else 0
