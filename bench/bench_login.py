"""Cross-device login benchmarks (issue 3, "Speed"), loopback only, bounded in time.

1. Approve → device notified: push (the long-poll wait endpoint, woken by the
   bus) against RFC 8628 polling at the default 5 s interval. The phone is the
   SDK's phone-side client; "approved" is the moment its SCRAM finish request
   is answered, "notified" the moment the device holds the answer (push: the
   wait endpoint returned; poll: the token endpoint issued tokens).
2. Load: N pending devices polling the token endpoint every 5 s (the target is
   10,000 devices = 2,000 polls/s on 2 cores with no errors). Load comes from
   ``--workers`` processes of asyncio + httpx on the same machine; what is
   reached is reported, together with the server's memory per pending session.

    .venv/bin/python bench/bench_login.py [--sessions N] [--duration S] [--workers W]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def _create(url: str, ca: str, count: int, offset: int) -> list[str]:
    ctx = ssl.create_default_context(cafile=ca)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(verify=ctx, limits=limits, timeout=60) as client:
        sem = asyncio.Semaphore(50)

        async def one(i: int) -> str:
            async with sem:
                r = await client.post(
                    url + "/oauth/device_authorization",
                    data={"client_id": "load", "login_hint": f"user{offset + i}"},
                )
                r.raise_for_status()
                return str(r.json()["device_code"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _poll(
    url: str, ca: str, codes: list[str], duration: float, interval: float, conns: int
) -> dict[str, int]:
    ctx = ssl.create_default_context(cafile=ca)
    counts = {"pending": 0, "slow_down": 0, "errors": 0}
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    deadline = time.monotonic() + duration
    async with httpx.AsyncClient(verify=ctx, limits=limits, timeout=30) as client:

        async def device(code: str) -> None:
            wait = interval
            await asyncio.sleep(random.uniform(0, wait))  # spread the phases
            while True:
                due = time.monotonic() + wait
                try:
                    r = await client.post(
                        url + "/oauth/token",
                        data={"grant_type": GRANT, "device_code": code, "client_id": "load"},
                    )
                    error = r.json().get("error")
                    if error == "authorization_pending":
                        counts["pending"] += 1
                    elif error == "slow_down":
                        counts["slow_down"] += 1
                        wait = float(r.json()["interval"])  # RFC 8628 §3.5
                    else:
                        counts["errors"] += 1
                except (httpx.HTTPError, ValueError):
                    counts["errors"] += 1
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() >= deadline:
                    return

        await asyncio.gather(*(device(c) for c in codes))
    return counts


def _worker(args: tuple[str, str, int, int, float, float, int], queue: Any) -> None:
    url, ca, count, offset, duration, interval, conns = args
    codes = asyncio.run(_create(url, ca, count, offset))
    queue.put(("created", len(codes)))
    ready_at = queue_get_go(queue)
    del ready_at
    queue.put(("done", asyncio.run(_poll(url, ca, codes, duration, interval, conns))))


def queue_get_go(queue: Any) -> float:
    # Workers start polling together, after every session exists; the parent
    # measures the server's memory in between.
    while True:
        time.sleep(0.05)
        if Path(os.environ["BENCH_GO"]).exists():
            return time.monotonic()


def load(
    server: ServerProcess, sessions: int, duration: float, workers: int, interval: float, conns: int
) -> dict[str, Any]:
    assert server.proc is not None
    pid = server.proc.pid
    base_rss = rss_kib(pid)
    db = server.data_dir / "hatchway.sqlite3"
    base_db = db.stat().st_size
    go = server.data_dir.parent / "go"
    os.environ["BENCH_GO"] = str(go)
    queue: Any = mp.get_context("fork").Queue()
    share = sessions // workers
    procs = [
        mp.get_context("fork").Process(
            target=_worker,
            args=(
                (
                    server.https_url,
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
    pending_db = db.stat().st_size + (
        db.with_name(db.name + "-wal").stat().st_size
        if db.with_name(db.name + "-wal").exists()
        else 0
    )
    go.touch()
    t1 = time.monotonic()
    totals = {"pending": 0, "slow_down": 0, "errors": 0}
    for _ in procs:
        for k, v in queue.get(timeout=duration + 600)[1].items():
            totals[k] += v
    elapsed = time.monotonic() - t1
    for p in procs:
        p.join()
    polls = sum(totals.values())
    return {
        "sessions": created,
        "create_per_s": round(created / create_s),
        "poll_target_per_s": round(created / interval),
        "polls_per_s": round(polls / elapsed),
        "polls": polls,
        "answers": totals,
        "duration_s": round(elapsed, 1),
        "server_rss_mib_idle": round(base_rss / 1024, 1),
        "server_rss_bytes_per_pending_session": round((pending_rss - base_rss) * 1024 / created),
        "db_bytes_per_pending_session": round((pending_db - base_db) / created),
        "server_rss_mib_after": round(rss_kib(pid) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=100, help="per worker")
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
