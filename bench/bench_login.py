"""Cross-device login benchmarks (issue 3, "Speed"), loopback only, bounded in time.

1. Approve → device notified: push (the long-poll wait endpoint, woken by the
   bus) against RFC 8628 polling at the default 5 s interval. The phone is the
   SDK's phone-side client; "approved" is the moment its SCRAM finish request
   is answered, "notified" the moment the device holds the answer (push: the
   wait endpoint returned; poll: the token endpoint issued tokens).
2. Load: N pending devices polling the token endpoint every 5 s (the target is
   10,000 devices = 2,000 polls/s on 2 cores with no errors). Load comes from
   ``--workers`` processes (default one) on the same two cores, each
   multiplexing its devices over ``--connections`` keep-alive TLS connections
   with raw asyncio streams and pre-built requests, so that the generator takes
   as little of the server's CPU as possible. What is reached is reported, with
   the CPU the server and the generator each used, and the server's memory per
   pending session (after creation, and after polling fills the poll cache).

    .venv/bin/python bench/bench_login.py [--sessions N] [--duration S] [--workers W]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import multiprocessing as mp
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from hatchway.login.device_client import DeviceLoginClient
from hatchway.login.phone import PhoneClient
from hatchway.server.process import ServerProcess

PASSWORD = "bench password"  # noqa: S105 - a throwaway account in a temp dir
GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def add_user(server: ServerProcess, name: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hatchway",
            "users",
            "add",
            name,
            "--password-stdin",
            "--iterations",
            "4096",
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        env=server.env(),
    )


def one_latency(server: ServerProcess, http: httpx.Client, *, push: bool) -> float:
    """Seconds from the phone's approval being answered to the device knowing."""
    device = DeviceLoginClient(server.https_url, http=http, client_id=f"bench-{push}")
    started = device.start("bench", device_name="bench")
    phone = PhoneClient(http)
    request = phone.open(started.verification_uri_complete)
    approved: list[float] = []
    # Approve at a random moment so polling sees a uniformly random phase.
    delay = random.uniform(0.2, 0.2 + (0 if push else started.interval))

    def approve() -> None:
        time.sleep(delay)
        phone.approve(request, PASSWORD, origin=server.https_url)
        approved.append(time.perf_counter())

    thread = threading.Thread(target=approve)
    thread.start()
    if push:
        while device.wait(started)["state"] == "pending":
            pass
        notified = time.perf_counter()
        tokens, _ = device.request_token(started)
        assert tokens is not None
    else:
        device.complete(started, push=False)
        notified = time.perf_counter()
    thread.join()
    return notified - approved[0]


def latency(server: ServerProcess, ctx: ssl.SSLContext, push_n: int, poll_n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(verify=ctx, timeout=40) as http:
        for mode, n in (("push", push_n), ("poll", poll_n)):
            if n == 0:
                continue
            samples = [one_latency(server, http, push=mode == "push") for _ in range(n)]
            out[mode] = {
                "n": n,
                "median_ms": round(statistics.median(samples) * 1000, 1),
                "max_ms": round(max(samples) * 1000, 1),
                "min_ms": round(min(samples) * 1000, 1),
            }
    return out


class _Conn:
    """One keep-alive HTTP/1.1 connection over TLS, speaking pre-built requests.

    The load generator shares the server's two cores, so it avoids an HTTP
    client library: a request is bytes built once, a response is read by
    Content-Length and classified by a substring test.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> _Conn:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _post(port: int, path: str, form: dict[str, str]) -> bytes:
    body = urlencode(form).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _create(port: int, ctx: ssl.SSLContext, count: int, offset: int, conns: int) -> list[str]:
    codes: list[str] = []
    todo = iter(range(count))

    async def run() -> None:
        conn = await _Conn.open(port, ctx)
        try:
            for i in todo:
                form = {"client_id": "load", "login_hint": f"user{offset + i}"}
                status, body = await conn.send(_post(port, "/oauth/device_authorization", form))
                if status != 200:
                    raise RuntimeError(f"start answered {status}: {body[:200]!r}")
                codes.append(str(json.loads(body)["device_code"]))
        finally:
            conn.close()

    await asyncio.gather(*(run() for _ in range(min(conns, 16))))
    return codes


async def _poll(
    port: int, ctx: ssl.SSLContext, codes: list[str], duration: float, interval: float, conns: int
) -> dict[str, Any]:
    """Every device polls ``interval`` s after its previous answer, until ``duration``.

    Scheduling from the answer (not from the previous send) is what an RFC 8628
    client does, and keeps queueing jitter from turning into ``slow_down``.
    """
    requests = [
        _post(port, "/oauth/token", {"grant_type": GRANT, "device_code": c, "client_id": "load"})
        for c in codes
    ]
    loop = asyncio.get_running_loop()
    start = loop.time()
    # Phases spread evenly over the first interval: a steady N / interval polls/s.
    due = [(start + interval * i / len(codes), i) for i in range(len(codes))]
    heapq.heapify(due)
    ready: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
    stop_at = start + duration
    counts = {"pending": 0, "slow_down": 0, "errors": 0}
    # The first round of polls reads every session from the store; steady state
    # is measured after it, from ``warm`` to the end.
    warm = start + min(2 * interval, duration / 2)
    steady = [0]  # polls answered after warm
    late: list[float] = []
    latency: list[float] = []

    async def dispatch() -> None:
        while loop.time() < stop_at:
            now = loop.time()
            while due and due[0][0] <= now:
                ready.put_nowait(heapq.heappop(due))
            await asyncio.sleep(0.002)
        for _ in range(conns):
            ready.put_nowait((-1.0, -1))

    async def connection() -> None:
        conn = await _Conn.open(port, ctx)
        try:
            while True:
                when, i = await ready.get()
                if i < 0:
                    return
                sent = loop.time()
                if sent >= warm:
                    late.append(sent - when)
                wait = interval
                try:
                    status, body = await conn.send(requests[i])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    counts["errors"] += 1
                    conn.close()
                    conn = await _Conn.open(port, ctx)
                else:
                    if status == 400 and b'"authorization_pending"' in body:
                        counts["pending"] += 1
                    elif status == 400 and b'"slow_down"' in body:
                        counts["slow_down"] += 1
                        wait = float(json.loads(body)["interval"])  # RFC 8628 §3.5
                    else:
                        counts["errors"] += 1
                answered = loop.time()
                if answered >= warm:
                    steady[0] += 1
                    latency.append(answered - sent)
                heapq.heappush(due, (answered + wait, i))
        finally:
            conn.close()

    async def mark_warm() -> None:
        await asyncio.sleep(warm - loop.time())
        cpu_warm[0] = time.process_time()

    cpu0 = time.process_time()
    cpu_warm = [cpu0]
    await asyncio.gather(dispatch(), mark_warm(), *(connection() for _ in range(conns)))
    late.sort()
    latency.sort()
    return {
        **counts,
        "cpu_s": time.process_time() - cpu0,
        "steady_polls": steady[0],
        "steady_s": stop_at - warm,
        "steady_cpu_s": time.process_time() - cpu_warm[0],
        "late_p50_ms": 1000 * late[len(late) // 2] if late else 0.0,
        "late_p99_ms": 1000 * late[len(late) * 99 // 100] if late else 0.0,
        "latency_p50_ms": 1000 * latency[len(latency) // 2] if latency else 0.0,
        "latency_p99_ms": 1000 * latency[len(latency) * 99 // 100] if latency else 0.0,
    }


def _worker(args: tuple[int, str, int, int, float, float, int], queue: Any) -> None:
    port, ca, count, offset, duration, interval, conns = args
    with contextlib.suppress(ImportError):
        import uvloop  # a lighter event loop leaves more of the cores to the server

        uvloop.install()
    ctx = ssl.create_default_context(cafile=ca)
    codes = asyncio.run(_create(port, ctx, count, offset, conns))
    queue.put(("created", len(codes)))
    wait_for_go()
    queue.put(("done", asyncio.run(_poll(port, ctx, codes, duration, interval, conns))))


def wait_for_go() -> None:
    # Workers start polling together, after every session exists; the parent
    # measures the server's memory in between.
    while not Path(os.environ["BENCH_GO"]).exists():
        time.sleep(0.05)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    server: ServerProcess, sessions: int, duration: float, workers: int, interval: float, conns: int
) -> dict[str, Any]:
    assert server.proc is not None
    pid = server.proc.pid
    base_rss = rss_kib(pid)
    db = server.data_dir / "hatchway.sqlite3"
    wal = db.with_name(db.name + "-wal")
    base_db = db.stat().st_size
    go = server.data_dir.parent / "go"
    os.environ["BENCH_GO"] = str(go)
    mpc = mp.get_context("fork")
    queue: Any = mpc.Queue()
    share = sessions // workers
    procs = [
        mpc.Process(
            target=_worker,
            args=(
                (
                    server.https_port,
                    str(server.ca_file),
                    share,
                    i * share,
                    duration,
                    interval,
                    conns,
                ),
                queue,
            ),
        )
        for i in range(workers)
    ]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    created = sum(queue.get(timeout=600)[1] for _ in procs)
    create_s = time.monotonic() - t0
    time.sleep(1)
    pending_rss = rss_kib(pid)
    pending_db = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    server_cpu0 = cpu_s(pid)
    go.touch()
    t1 = time.monotonic()
    time.sleep(min(2 * interval, duration / 2))  # the workers' warm-up (see _poll)
    server_cpu_warm = cpu_s(pid)
    results = [queue.get(timeout=duration + 600)[1] for _ in procs]
    elapsed = time.monotonic() - t1
    server_cpu_end = cpu_s(pid)
    server_cpu = server_cpu_end - server_cpu0
    steady_s = max(r["steady_s"] for r in results)
    for p in procs:
        p.join()
    totals = {k: sum(r[k] for r in results) for k in ("pending", "slow_down", "errors")}
    polls = sum(totals.values())
    polled_rss = rss_kib(pid)
    return {
        "sessions": created,
        "create_per_s": round(created / create_s),
        "poll_target_per_s": round(created / interval),
        "polls_per_s": round(polls / elapsed),
        "polls": polls,
        "answers": totals,
        "duration_s": round(elapsed, 1),
        "server_cpu_cores": round(server_cpu / elapsed, 2),
        "generator_cpu_cores": round(sum(r["cpu_s"] for r in results) / elapsed, 2),
        "steady_polls_per_s": round(sum(r["steady_polls"] for r in results) / steady_s),
        "steady_server_cpu_cores": round((server_cpu_end - server_cpu_warm) / steady_s, 2),
        "steady_generator_cpu_cores": round(sum(r["steady_cpu_s"] for r in results) / steady_s, 2),
        "send_late_ms_p50_p99": [
            round(max(r["late_p50_ms"] for r in results), 1),
            round(max(r["late_p99_ms"] for r in results), 1),
        ],
        "answer_ms_p50_p99": [
            round(max(r["latency_p50_ms"] for r in results), 1),
            round(max(r["latency_p99_ms"] for r in results), 1),
        ],
        "server_rss_mib_idle": round(base_rss / 1024, 1),
        "server_rss_bytes_per_session_created": round((pending_rss - base_rss) * 1024 / created),
        "server_rss_bytes_per_session_polled": round((polled_rss - pending_rss) * 1024 / created),
        "db_bytes_per_pending_session": round((pending_db - base_db) / created),
        "server_rss_mib_after": round(polled_rss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=32, help="per worker")
    ap.add_argument("--push", type=int, default=20, help="push latency samples")
    ap.add_argument("--poll", type=int, default=5, help="poll latency samples (5 s each)")
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hatchway-bench-login-") as tmp:
        server = ServerProcess(
            Path(tmp) / "data",
            env={
                "HATCHWAY_LOGIN_START_PER_MINUTE": str(10 * args.sessions + 100),
                "HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE": "600",
                "HATCHWAY_LOG_LEVEL": "warning",
            },
        )
        server.start()
        try:
            add_user(server, "bench")
            # Registered clients with the default anti-phishing (confirm-code):
            # the phone picks the code, so push and polling are what is measured.
            for client_id in ("bench-True", "bench-False", "load"):
                command = ["clients", "add", client_id, "--name", client_id]
                subprocess.run(
                    [sys.executable, "-m", "hatchway", *command],
                    check=True,
                    capture_output=True,
                    env=server.env(),
                )
            ctx = ssl.create_default_context(cafile=str(server.ca_file))
            print("latency:", latency(server, ctx, args.push, args.poll), flush=True)
            if not args.skip_load:
                print(
                    "load:",
                    load(server, args.sessions, args.duration, args.workers, 5.0, args.connections),
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
