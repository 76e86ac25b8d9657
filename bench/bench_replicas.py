"""Ingest with 1 and then 2 ``hatchway serve`` replicas behind one TCP balancer, on PostgreSQL.

Issue 10 §4 (docs/scaling.md). The set-up:

* a fresh PostgreSQL database;
* replica A starts, and ``--devices`` devices enrol through it;
* replica B gets a copy of A's identity and uses the same database;
* both join one MQTT shared subscription on the machine's Mosquitto;
* one TCP balancer (``tests/replicas/balancer.py``, in its own process, round-robin
  per connection) publishes both plain listeners on one port.

Each round runs the same pre-sealed loads first with B stopped, then with B running:

* HTTP: bench_ingest's load generator, keep-alive HTTP/1.1 over ``--connections``
  connections through the balancer, each device always on the same connection;
* MQTT: one publisher keeping ``--connections`` requests in flight, each timed until
  its reply comes back.

Printed per run:

* messages/s, p50 and p99;
* server CPU per message, summed over the replicas that ran;
* the CPU per message of the balancer and of PostgreSQL (the backends serving this
  database);
* bytes per message (HTTP: on the wire; MQTT: payloads);
* the whole cluster's WAL per message (an upper bound on a shared server);
* replica RSS, and the load average before and after, since the machine may be
  shared.

After the runs it prints what each stored message costs in PostgreSQL: rows, live
row size and ``pg_total_relation_size`` (heap, indexes, TOAST).

    PYTHONPATH=src:. python bench/bench_replicas.py [--devices 40] [--messages 40]
        [--connections 32] [--rounds 2] [--only mqtt-1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import zip_longest
from pathlib import Path

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench_ingest import TELEMETRY, Run, cpu_seconds, keepalive_load, lanes_for, preseal
from hatchway.bus import postgres_conninfo
from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.mqtt.broker import TCP_NODELAY
from hatchway.server.context import ServerContext
from hatchway.server.process import free_port
from tests.mqtt.brokers import wait_mqtt
from tests.replicas.conftest import _copy_identity, fresh_database, replica_pair

ROOT = Path(__file__).resolve().parents[1]
#: Tables a telemetry message writes to: its row, its jti (purged after expiry), the
#: device's replay window and outbound counter (updated in place).
TABLES = ("messages", "seen_jti", "replay_windows", "devices")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def start_balancer(port: int, upstreams: list[int]) -> subprocess.Popen[bytes]:
    """The test suite's balancer in a process of its own, so its CPU is its own."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.replicas.balancer", "--port", str(port)),
            *("--upstream", ",".join(map(str, upstreams)), "--lifetime", "1800"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the balancer did not start")


class Postgres:
    """CPU of the backends serving one database, and what its tables hold."""

    def __init__(self, database_url: str) -> None:
        self.conninfo = postgres_conninfo(database_url)
        self.name = database_url.rsplit("/", 1)[1]

    def _backends(self) -> dict[int, float]:
        with psycopg.connect(self.conninfo) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            ).fetchall()
        out = {}
        for (pid,) in rows:
            with contextlib.suppress(OSError):  # gone, or not ours to read
                out[pid] = cpu_seconds(pid)
        return out

    def wal(self) -> int:
        """The cluster's WAL position: shared with every other database on it."""
        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        return int(row[0]) if row else 0

    def cpu_during(self, work: Callable[[], None]) -> tuple[float, int]:
        """(CPU seconds of this database's backends, cluster WAL bytes) during ``work``."""
        before, wal = self._backends(), self.wal()
        work()
        after, wal = self._backends(), self.wal() - wal
        # A backend that connected during the run (a pool growing) counts from zero.
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()), wal

    def sizes(self) -> list[tuple[str, int, float, int]]:
        """(table, rows, mean live row bytes, bytes with indexes, TOAST and dead
        versions) for each of ``TABLES``."""
        out = []
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # dead versions' space becomes reusable
            for table in TABLES:
                rows, width = conn.execute(
                    f"SELECT count(*), coalesce(avg(pg_column_size(t.*)), 0) FROM {table} t"  # noqa: S608
                ).fetchone() or (0, 0)
                size = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
                out.append((table, int(rows), float(width), int(size[0]) if size else 0))
        return out


class Site:
    def __init__(self, root: Path, database_url: str, lb_port: int) -> None:
        a_https, a_http = free_port(), free_port()
        self.prefix = f"bench{secrets.token_hex(3)}/hatchway"
        env = {
            "HATCHWAY_DATABASE_URL": database_url,
            "HATCHWAY_PUBLIC_HTTPS_URL": f"https://localhost:{a_https}",
            "HATCHWAY_PUBLIC_HTTP_URL": f"http://localhost:{lb_port}",
            "HATCHWAY_LOG_LEVEL": "warning",
            "HATCHWAY_MQTT_URL": "mqtt://127.0.0.1:1883",
            "HATCHWAY_MQTT_TOPIC_PREFIX": self.prefix,
            # A stopped replica's session goes at once, so the broker deals it no uplinks.
            "HATCHWAY_MQTT_SESSION_EXPIRY": "0",
        }
        self.a, self.b = replica_pair(root, env, name="bench", a_ports=(a_https, a_http))

    def start_b(self) -> None:
        if not self.b.data_dir.exists():
            _copy_identity(self.a.data_dir, self.b.data_dir)
        self.b.start()
        wait_mqtt(self.b)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in (self.a, self.b) if s.proc is not None]


def run_once(
    name: str,
    site: Site,
    pg: Postgres,
    balancer: subprocess.Popen[bytes],
    load_fn: Callable[[Run], int],
) -> None:
    """Run ``load_fn`` and print its figures with the CPU of everything that served it."""
    pids = site.pids()
    run = Run()
    load_before = load()
    server0 = sum(cpu_seconds(pid) for pid in pids)
    lb0 = cpu_seconds(balancer.pid)

    done = 0

    def work() -> None:
        nonlocal done
        started = time.perf_counter()
        done = load_fn(run)
        run.elapsed = time.perf_counter() - started

    pg_cpu, wal = pg.cpu_during(work)
    server = sum(cpu_seconds(pid) for pid in pids) - server0
    lb = cpu_seconds(balancer.pid) - lb0
    lat = sorted(run.latencies) or [0.0]
    n = max(done, 1)
    latency = (
        f"p50 {lat[len(lat) // 2] * 1e3:6.1f} ms  p99 {lat[int(len(lat) * 0.99)] * 1e3:7.1f} ms"
    )
    print(
        f"{name:20} {done:5d} msg {done / run.elapsed:7.1f} msg/s  {latency}  "
        f"server CPU {server / n * 1e3:5.2f} ms/msg (over {len(pids)})  "
        f"PostgreSQL {pg_cpu / n * 1e3:5.2f} ms/msg  balancer {lb / n * 1e3:5.2f} ms/msg  "
        f"{run.wire / n:5.0f} B/msg  cluster WAL {wal / n:5.0f} B/msg  failed {run.failures}  "
        f"server RSS {'+'.join(str(rss_mib(pid)) for pid in pids)} MiB  "
        f"load {load_before} -> {load()}",
        flush=True,
    )


def http_load(
    lb_port: int, devices: list[Device], args: argparse.Namespace
) -> Callable[[Run], int]:
    """Pre-sealed telemetry over keep-alive HTTP through the balancer."""
    lanes = lanes_for([preseal(d, args.messages) for d in devices], args.connections)

    def go(run: Run) -> int:
        asyncio.run(keepalive_load(lb_port, lanes, time.monotonic() + args.max_seconds, run))
        return run.done

    return go


def mqtt_load(prefix: str, devices: list[Device], args: argparse.Namespace) -> Callable[[Run], int]:
    """Pre-sealed telemetry published QoS 1 by one client with at most ``--connections``
    requests awaiting their reply (as many as the HTTP run's connections; a meter has
    one at a time); the shared subscription spreads them over the replicas. All at
    once would overflow the broker's queue for a replica (Mosquitto's
    ``max_queued_messages``, 1,000 by default, drops the rest)."""
    per_device = [preseal(d, args.messages) for d in devices]
    order = [
        (device.device_id, token)
        for row in zip_longest(*per_device)
        for device, token in zip(devices, row, strict=True)
        if token is not None
    ]

    def go(run: Run) -> int:
        asyncio.run(windowed_mqtt(prefix, order, args.connections, run, args.max_seconds))
        return run.done

    return go


async def windowed_mqtt(
    prefix: str, order: list[tuple[str, bytes]], window: int, run: Run, max_seconds: float
) -> None:
    """Publish ``order`` keeping ``window`` requests in flight; time each to its reply."""
    sent: dict[bytes, float] = {}
    slots = asyncio.Semaphore(window)
    async with aiomqtt.Client(
        "127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5, socket_options=TCP_NODELAY
    ) as client:
        await client.subscribe(f"{prefix}/d/+/down", qos=1)

        async def replies() -> None:
            async for message in client.messages:
                started = sent.pop(bytes(message.properties.CorrelationData), None)
                if started is not None:
                    run.latencies.append(time.perf_counter() - started)
                    run.wire += len(message.payload) if isinstance(message.payload, bytes) else 0
                    slots.release()
                    if not sent and len(run.latencies) == len(order):
                        return

        reader = asyncio.create_task(replies())
        publishing: set[asyncio.Task[None]] = set()
        async with asyncio.timeout(max_seconds):
            for device_id, token in order:
                await slots.acquire()
                correlation = secrets.token_bytes(16)
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = correlation
                sent[correlation] = time.perf_counter()
                # Not awaited one by one: waiting for the broker's PUBACK before the next
                # publish kept far fewer than ``window`` requests in flight.
                task = asyncio.create_task(
                    client.publish(f"{prefix}/d/{device_id}/up", token, qos=1, properties=props)
                )
                publishing.add(task)
                task.add_done_callback(publishing.discard)
                run.wire += len(token)
            await reader


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--messages", type=int, default=50, help="per device and run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="1 replica, then 2, this often")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per run")
    parser.add_argument(
        "--only",
        choices=("mqtt-1",),
        help="run just this load (MQTT with 1 replica): a short before/after comparison",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hatchway-replicas-"))
    print(f"cores: {os.cpu_count()}  load average: {load()}")
    lb_port = free_port()
    with fresh_database("hw_bench_replicas") as database_url:
        site = Site(root, database_url, lb_port)
        pg = Postgres(database_url)
        balancer = start_balancer(lb_port, [site.a.http_port, site.b.http_port])
        site.a.start()
        wait_mqtt(site.a)
        try:
            ops = ServerContext.create(settings_from_env(site.a.env()))
            devices = []
            for i in range(args.devices):
                device_id = f"meter-{i:04d}"
                devices.append(
                    Device.enroll(
                        server=site.a.https_url,
                        device_id=device_id,
                        secret=ops.enrolment.provision(device_id),
                        state_path=root / f"{device_id}.json",
                        ca_file=site.a.ca_file,
                        message_ttl=600,
                    )
                )
            ops.close()
            for device in devices:
                device.send(TELEMETRY)  # warms A's key cache
            token = preseal(devices[0], 1)[0]
            print(
                f"{args.devices} devices, {args.messages} messages each per run, "
                f"{args.connections} connections; sealed telemetry token {len(token)} B"
            )
            for _ in range(args.rounds):
                if site.b.proc is not None:
                    site.b.stop()
                http, mqtt = (
                    http_load(lb_port, devices, args),
                    mqtt_load(site.prefix, devices, args),
                )
                if args.only is None:
                    run_once("HTTP, 1 replica", site, pg, balancer, http)
                run_once("MQTT, 1 replica", site, pg, balancer, mqtt)
                if args.only is not None:
                    continue
                site.start_b()
                # Warm B's key cache (a device's first message on a replica looks its key up).
                warm = lanes_for([preseal(d, 2) for d in devices], args.connections)
                asyncio.run(keepalive_load(lb_port, warm, time.monotonic() + 30, Run()))
                asyncio.run(
                    windowed_mqtt(
                        site.prefix,
                        [(d.device_id, t) for d in devices for t in preseal(d, 2)],
                        args.connections,
                        Run(),
                        30,
                    )
                )
                http, mqtt = (
                    http_load(lb_port, devices, args),
                    mqtt_load(site.prefix, devices, args),
                )
                run_once("HTTP, 2 replicas", site, pg, balancer, http)
                run_once("MQTT, 2 replicas", site, pg, balancer, mqtt)
            sizes = pg.sizes()
            stored = max(1, next(rows for table, rows, _, _ in sizes if table == "messages"))
            for table, rows, width, size in sizes:
                print(
                    f"{table:16} {rows:7d} rows, live row {width:5.0f} B, on disk "
                    f"{size / 1024:7.0f} KiB = {size / max(rows, 1):6.0f} B/row, "
                    f"{size / stored:5.0f} B per stored message"
                )
            for device in devices:
                device.close()
        finally:
            site.b.stop()
            site.a.stop()
            balancer.terminate()
            balancer.wait(10)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
