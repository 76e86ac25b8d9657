"""Ingest rate of a real ``hatchway serve``: pre-sealed messages, many connections.

Issue 10 §1. For every store (``--stores``: SQLite in a fresh data dir, PostgreSQL in
a fresh database created next to ``--postgres`` and dropped after) and every
``--workers`` value, one server subprocess (``hatchway serve`` with
``HATCHWAY_WORKERS``). ``--devices`` devices enrol through the SDK over HTTPS; then,
for every ``--connections`` value, each device's messages are sealed *before* the
run (sequence numbers in order per device) and sent by an asyncio load generator in
this process, which does no cryptography while timed:

* ``http``: over that many keep-alive HTTP/1.1 connections, one request in flight
  per connection;
* ``mqtt``: QoS 1 publishes to each device's uplink topic on the machine's Mosquitto
  (127.0.0.1:1883) over that many MQTT connections, the next one when the sealed ack
  of the previous has come back on the downlink.

A device always uses the same connection, so its sequence numbers arrive in order.
In the same server's run, the baseline: the same kind of load with a brand-new TLS
connection (full handshake, no resumption) per message to the HTTPS listener.

Printed per run: messages/s, p50/p99 latency, the server's CPU per message (utime +
stime from ``/proc``, summed over the supervisor and every worker; PostgreSQL's and
Mosquitto's own CPU are not in it), the load generator's own CPU per message, bytes
on the wire per message (MQTT: computed from the packets, see ``_ingest_mqtt``), and
the load average, because a loaded machine skews every figure; compare ratios within
one invocation.

    PYTHONPATH=src:bench python bench/bench_ingest.py --workers 1,2 \
        --stores sqlite,postgresql --transports http,mqtt --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import TypeVar

from _ingest_mqtt import mqtt_load, server_env
from bench_e2e import tls_post_new_connection  # same baseline, one implementation
from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.msgsec import MessageType, SenderInfo, open_message, seal
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess

T = TypeVar("T")
TELEMETRY = {"kwh": 12.5, "volts": 229.8, "amps": 3.1, "ts": 1_700_000_000, "pad": "x" * 120}
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    return sum(cpu_split(pid))


def preseal(device: Device, count: int) -> list[bytes]:
    """``count`` telemetry tokens in sequence order, sealed as ``Device.send`` would."""
    tokens = []
    for i in range(count):
        body = {"mid": os.urandom(16).hex(), "readings": {**TELEMETRY, "n": i}}
        message = device._message(MessageType.TELEMETRY, body, None)
        tokens.append(
            seal(
                message,
                signing_key=device._signing,
                recipient_key=device._server_enc,
                suite=device._suite,
                random=device.random,
            )
        )
    return tokens


def request_bytes(port: int, token: bytes) -> bytes:
    head = (
        f"POST /m HTTP/1.1\r\nHost: localhost:{port}\r\n"
        f"Content-Type: application/jose\r\nContent-Length: {len(token)}\r\n\r\n"
    )
    return head.encode() + token


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read one HTTP/1.1 response; return (status, bytes read)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status, len(head) + length


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    wire: int = 0
    failures: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    sys: float = 0.0
    client: float = 0.0
    per_process: list[float] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.latencies)

    def line(self, name: str) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = lat[len(lat) // 2] * 1e3
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
        rate = self.done / self.elapsed if self.elapsed else 0.0
        cpu_ms = self.cpu / self.done * 1e3 if self.done else 0.0
        wire = self.wire / self.done if self.done else 0.0
        sys_pct = 100 * self.sys / self.cpu if self.cpu else 0.0
        client_ms = self.client / self.done * 1e3 if self.done else 0.0
        return (
            f"{name:30} {self.done:6d} msg {rate:8.1f} msg/s  p50 {p50:8.1f} ms  "
            f"p99 {p99:8.1f} ms  server CPU {cpu_ms:6.2f} ms/msg ({sys_pct:.0f}% system)  "
            f"{wire:6.0f} B/msg  load generator CPU {client_ms:.2f} ms/msg  "
            f"failed {self.failures}"
            + (
                "\n"
                + " " * 31
                + "CPU ms/msg per process (supervisor first): "
                + ", ".join(f"{c / self.done * 1e3:.2f}" for c in self.per_process)
                if len(self.per_process) > 1 and self.done
                else ""
            )
        )


async def keepalive_load(port: int, lanes: list[list[bytes]], deadline: float, run: Run) -> None:
    """One keep-alive connection per lane, each posting its tokens back to back."""

    async def lane(tokens: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for token in tokens:
                if time.monotonic() > deadline:
                    return
                request = request_bytes(port, token)
                start = time.perf_counter()
                writer.write(request)
                status, received = await read_reply(reader)
                run.latencies.append(time.perf_counter() - start)
                run.wire += len(request) + received
                run.failures += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(lane(tokens) for tokens in lanes))


async def tls_load(
    port: int, context: ssl.SSLContext, lanes: list[list[bytes]], deadline: float, run: Run
) -> None:
    """The baseline: every message on a brand-new TLS connection (full handshake)."""

    async def lane(tokens: list[bytes]) -> None:
        for token in tokens:
            if time.monotonic() > deadline:
                return
            request = request_bytes(port, token)
            start = time.perf_counter()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
            writer.write(request)
            status, _ = await read_reply(reader)
            run.latencies.append(time.perf_counter() - start)
            # TLS bytes are counted at the socket below; see count_tls_bytes.
            run.failures += status != 200
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(lane(tokens) for tokens in lanes))


def lanes_for(per_device: list[list[T]], connections: int) -> list[list[T]]:
    """Device ``i`` always rides connection ``i % connections``; devices interleave."""
    lanes: list[list[list[T]]] = [[] for _ in range(min(connections, len(per_device)))]
    for i, tokens in enumerate(per_device):
        lanes[i % len(lanes)].append(tokens)
    out = []
    for group in lanes:
        out.append([t for row in zip_longest(*group) for t in row if t is not None])
    return out


def tree_cpu(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) summed over the server's processes (supervisor and workers)."""
    splits = [cpu_split(pid) for pid in pids]
    return sum(u for u, _ in splits), sum(s for _, s in splits)


def measure(pids: list[int], load: object) -> Run:
    run = Run()
    before = {pid: sum(cpu_split(pid)) for pid in pids}
    (user0, sys0), t0 = tree_cpu(pids), time.perf_counter()
    own0 = time.process_time()
    asyncio.run(load(run))  # type: ignore[operator]
    run.elapsed = time.perf_counter() - t0
    run.client = time.process_time() - own0
    user1, sys1 = tree_cpu(pids)
    run.cpu, run.sys = user1 - user0 + sys1 - sys0, sys1 - sys0
    run.per_process = [sum(cpu_split(pid)) - before[pid] for pid in pids]
    return run


def start_profile(
    pids: list[int], root: Path, label: str, seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy each server process for the first ``seconds`` of a run: only samples holding
    the GIL, i.e. where the server's Python CPU goes (a wait for the disk or a lock is
    not in it). One collapsed-stacks file per process."""
    if seconds <= 0:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    procs = []
    for pid in pids:
        out = root / f"profile-{label}-{pid}.txt"
        cmd = [str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "--gil"]
        procs.append(
            subprocess.Popen(
                [*cmd, "--format", "raw", "--nonblocking", "-o", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def crypto_floor(ctx: ServerContext, tokens: list[bytes]) -> float:
    """Seconds per message of the server's own cryptography, one thread, in this process:
    open + verify the request, seal + sign the acknowledgement (no HTTP, no store)."""
    service = ctx.messages

    def resolve(kid: str) -> SenderInfo | None:
        peer = service._peer(kid)
        return None if peer is None else peer.sender

    def one(token: bytes) -> None:
        message, sender = open_message(
            token,
            decryption_keys=service.keyring.decryption_keys,
            resolve_sender=resolve,
            policy=service._policy,
            now=time.time(),
        )
        peer = service._peer(sender.verifying_key.kid)
        assert peer is not None
        ack = service._message(peer, MessageType.ACK, message, time.time(), {"status": "ok"}, 1)
        service._seal(peer, ack)

    one(tokens[0])
    # CPU time of this thread, not wall time: on a loaded machine wall time mostly
    # measures the wait for a core, while the server's figure below is CPU time too.
    start = time.thread_time()
    for token in tokens:
        one(token)
    return (time.thread_time() - start) / len(tokens)


def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A new empty database next to ``admin_url``'s, and how to drop it (as the tests'
    ``fresh_database`` does): every server run starts from an empty store."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    from hatchway.bus import postgres_conninfo

    name = f"hw_bench_{os.urandom(5).hex()}"
    admin = postgres_conninfo(admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def enrol(server: ServerProcess, ctx: ServerContext, root: Path, count: int) -> list[Device]:
    devices = []
    for i in range(count):
        device_id = f"meter-{i:04d}"
        devices.append(
            Device.enroll(
                server=server.https_url,
                device_id=device_id,
                secret=ctx.enrolment.provision(device_id),
                state_path=root / f"{device_id}.json",
                ca_file=server.ca_file,
                message_ttl=600,
            )
        )
    # Warm the server's key cache and code paths with a few real round trips.
    for device in devices:
        device.send(TELEMETRY)
    return devices


def bench_server(args: argparse.Namespace, store: str, workers: int) -> None:
    """One server (fresh data dir, fresh database), every run against it."""
    root = Path(tempfile.mkdtemp(prefix="hatchway-ingest-"))
    prefix = f"bench{os.urandom(3).hex()}/hatchway"
    env = {"HATCHWAY_LOG_LEVEL": args.log_level, "HATCHWAY_WORKERS": str(workers)}
    if "mqtt" in args.transports:
        env.update(server_env(prefix))
    drop: Callable[[], None] | None = None
    if store == "postgresql":
        env["HATCHWAY_DATABASE_URL"], drop = fresh_postgres(args.postgres)
    print(f"\n== {store}, {workers} worker(s); load average {os.getloadavg()}", flush=True)
    try:
        with ServerProcess(root / "data", env=env) as server:
            ctx = ServerContext.create(settings_from_env(server.env()))
            try:
                measure_server(args, server, ctx, root, prefix)
            finally:
                ctx.close()
    finally:
        if drop is not None:
            drop()


def measure_server(
    args: argparse.Namespace, server: ServerProcess, ctx: ServerContext, root: Path, prefix: str
) -> None:
    pids = server.pids
    devices = enrol(server, ctx, root, args.devices)
    floor = crypto_floor(ctx, [t for d in devices[:10] for t in preseal(d, 20)])
    print(
        f"crypto floor (open+verify, sign+seal; CPU time, this run): {floor * 1e3:.2f} ms/msg"
        f" = {1 / floor:.0f} msg/s per core"
    )
    idle0 = sum(tree_cpu(pids))
    time.sleep(2.0)
    idle = (sum(tree_cpu(pids)) - idle0) / 2.0
    print(f"server processes {len(pids)}, CPU while idle: {idle * 1e3:.0f} ms/s")

    def report(run: Run, name: str) -> None:
        print(run.line(name), flush=True)
        if run.done:
            busy = (run.cpu - idle * run.elapsed) / run.done
            print(f"{'':31}server CPU per msg less idle / crypto floor: {busy / floor:.2f}x")

    for connections in (int(c) for c in args.connections.split(",")):
        if "http" in args.transports:
            lanes = lanes_for([preseal(d, args.messages) for d in devices], connections)
            deadline = time.monotonic() + args.max_seconds

            async def plain(
                run: Run, lanes: list[list[bytes]] = lanes, deadline: float = deadline
            ) -> None:
                await keepalive_load(server.http_port, lanes, deadline, run)

            spies = start_profile(pids, root, f"{connections}", args.profile_seconds)
            report(measure(pids, plain), f"HTTP keep-alive, {connections} conn")
            for spy in spies:
                spy.wait()
                print(f"py-spy profile (collapsed stacks): {spy.args[-1]}")
        if "mqtt" in args.transports:
            paired = [[(d.device_id, t) for t in preseal(d, args.messages)] for d in devices]
            mqtt_lanes = lanes_for(paired, connections)
            deadline = time.monotonic() + args.max_seconds

            async def mqtt(
                run: Run,
                lanes: list[list[tuple[str, bytes]]] = mqtt_lanes,
                deadline: float = deadline,
            ) -> None:
                await mqtt_load(prefix, lanes, deadline, run)

            report(measure(pids, mqtt), f"MQTT QoS 1, {connections} conn")

    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.options |= ssl.OP_NO_TICKET  # a brand-new session every time
    connections = max(int(c) for c in args.connections.split(","))
    per_device = [preseal(d, args.tls_messages) for d in devices]
    _, wire = tls_post_new_connection(server.https_port, context, per_device[0].pop(0))
    tls_lanes = lanes_for([t for t in per_device if t], connections)
    deadline = time.monotonic() + args.max_seconds

    async def tls(run: Run) -> None:
        await tls_load(server.https_port, context, tls_lanes, deadline, run)

    run = measure(pids, tls)
    run.wire = wire * run.done
    report(run, f"new TLS per msg, {connections} conn")
    stored = sum(ctx.store.count_messages(d.device_id) for d in devices)
    print(f"messages stored: {stored}")
    for device in devices:
        device.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated; a server each")
    parser.add_argument("--stores", default="sqlite", help="sqlite,postgresql")
    parser.add_argument("--transports", default="http", help="http,mqtt")
    parser.add_argument("--connections", default="32", help="comma-separated list")
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--messages", type=int, default=50, help="per device and run")
    parser.add_argument("--tls-messages", type=int, default=5, help="per device, TLS baseline")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="where to create a fresh database per PostgreSQL server",
    )
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per run")
    parser.add_argument("--profile-seconds", type=float, default=0.0, help="py-spy the server")
    parser.add_argument("--log-level", default="warning", help="the server's")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    for store in args.stores.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            bench_server(args, store, workers)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
