"""Ingest rate of a real ``hatchway serve``: pre-sealed messages, many connections.

Issue 10 §1. The server is a subprocess (SQLite by default, PostgreSQL with
``--database-url``). ``--devices`` devices enrol through the SDK over HTTPS; then,
for every ``--connections`` value, each device's messages are sealed *before* the
run (sequence numbers in order per device) and posted by an asyncio load generator
over that many keep-alive HTTP/1.1 connections. A device always uses the same
connection, so its sequence numbers arrive in order. The generator is a separate
process from the server and does no cryptography during the run.

In the same run, the baseline: the same kind of load with a brand-new TLS connection
(full handshake, no resumption) per message, against the HTTPS listener's copy of the
endpoint.

Printed per run: messages/s, p50/p99 latency, the server's CPU per message
(``/proc/<pid>/stat`` utime+stime deltas), bytes on the wire per message, and the
load average, because a loaded machine skews every figure here; ratios against the
same-run baseline are what to compare across machines.

    PYTHONPATH=src python bench/bench_ingest.py [--connections 1,32] [--messages 50]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/<fresh db>]
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
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from bench_e2e import tls_post_new_connection  # same baseline, one implementation
from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.msgsec import MessageType, SenderInfo, open_message, seal
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess

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


def lanes_for(per_device: list[list[bytes]], connections: int) -> list[list[bytes]]:
    """Device ``i`` always rides connection ``i % connections``; devices interleave."""
    lanes: list[list[list[bytes]]] = [[] for _ in range(min(connections, len(per_device)))]
    for i, tokens in enumerate(per_device):
        lanes[i % len(lanes)].append(tokens)
    out = []
    for group in lanes:
        out.append([t for row in zip_longest(*group) for t in row if t is not None])
    return out


def measure(pid: int, load: object) -> Run:
    run = Run()
    (user0, sys0), t0 = cpu_split(pid), time.perf_counter()
    own0 = time.process_time()
    asyncio.run(load(run))  # type: ignore[operator]
    run.elapsed = time.perf_counter() - t0
    run.client = time.process_time() - own0
    user1, sys1 = cpu_split(pid)
    run.cpu, run.sys = user1 - user0 + sys1 - sys0, sys1 - sys0
    return run


def start_profile(
    pid: int, root: Path, connections: int, seconds: float
) -> subprocess.Popen[bytes] | None:
    """py-spy the server for the first ``seconds`` of a run: only samples holding the GIL,
    i.e. where the server's Python CPU goes (a wait for the disk or a lock is not in it)."""
    if seconds <= 0:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    out = root / f"profile-{connections}.txt"
    cmd = [str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "--gil"]
    return subprocess.Popen(
        [*cmd, "--format", "raw", "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", default="1,32", help="comma-separated list")
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--messages", type=int, default=50, help="per device and run")
    parser.add_argument("--tls-messages", type=int, default=5, help="per device, TLS baseline")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per run")
    parser.add_argument("--profile-seconds", type=float, default=0.0, help="py-spy the server")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hatchway-ingest-"))
    env = {"HATCHWAY_LOG_LEVEL": "warning"}
    if args.database_url:
        env["HATCHWAY_DATABASE_URL"] = args.database_url
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    with ServerProcess(root / "data", env=env) as server:
        assert server.proc is not None
        pid = server.proc.pid
        ctx = ServerContext.create(settings_from_env(server.env()))
        devices = []
        for i in range(args.devices):
            device_id = f"meter-{i:04d}"
            secret = ctx.enrolment.provision(device_id)
            devices.append(
                Device.enroll(
                    server=server.https_url,
                    device_id=device_id,
                    secret=secret,
                    state_path=root / f"{device_id}.json",
                    ca_file=server.ca_file,
                    message_ttl=600,
                )
            )
        # Warm the server's key cache and code paths with a few real round trips.
        for device in devices:
            device.send(TELEMETRY)

        floor = crypto_floor(ctx, [t for d in devices[:10] for t in preseal(d, 20)])
        print(
            f"crypto floor (open+verify, sign+seal; CPU time, this run): {floor * 1e3:.2f} ms/msg"
            f" = {1 / floor:.0f} msg/s per core"
        )
        idle0 = cpu_seconds(pid)
        time.sleep(2.0)
        idle = (cpu_seconds(pid) - idle0) / 2.0
        print(f"server CPU while idle: {idle * 1e3:.0f} ms/s")
        print(f"{args.devices} devices, {args.messages} messages each per run")
        for connections in (int(c) for c in args.connections.split(",")):
            per_device = [preseal(d, args.messages) for d in devices]
            lanes = lanes_for(per_device, connections)
            deadline = time.monotonic() + args.max_seconds

            async def plain(
                run: Run, lanes: list[list[bytes]] = lanes, deadline: float = deadline
            ) -> None:
                await keepalive_load(server.http_port, lanes, deadline, run)

            spy = start_profile(pid, root, connections, args.profile_seconds)
            run = measure(pid, plain)
            print(run.line(f"keep-alive, {connections} conn"), flush=True)
            busy = (run.cpu - idle * run.elapsed) / run.done
            print(
                f"{'':30} server CPU per msg less idle / crypto floor: {busy / floor:.2f}x",
                flush=True,
            )
            if spy is not None:
                spy.wait()
                print(f"py-spy profile (collapsed stacks): {spy.args[-1]}")

        context = ssl.create_default_context(cafile=str(server.ca_file))
        context.options |= ssl.OP_NO_TICKET  # a brand-new session every time
        connections = max(int(c) for c in args.connections.split(","))
        per_device = [preseal(d, args.tls_messages) for d in devices]
        _, wire = tls_post_new_connection(server.https_port, context, per_device[0].pop(0))
        lanes = lanes_for([t for t in per_device if t], connections)
        deadline = time.monotonic() + args.max_seconds

        async def tls(run: Run) -> None:
            await tls_load(server.https_port, context, lanes, deadline, run)

        run = measure(pid, tls)
        run.wire = wire * run.done
        print(run.line(f"new TLS per msg, {connections} conn"), flush=True)
        stored = sum(ctx.store.count_messages(d.device_id) for d in devices)
        print(f"messages stored: {stored}")
        ctx.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
