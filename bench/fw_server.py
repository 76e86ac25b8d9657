"""Server side of bench_firmware: the firmware path against a plain file over HTTPS.

One run, same machine, real processes (``hatchway serve`` and, for the baseline, a
tiny uvicorn app serving the same 4 MiB file with ``FileResponse`` over TLS):

* **offers**: N devices (default 1,000) enrolled and grouped; each polls once with
  nothing queued (after a first, unmeasured round that warms the server's key cache:
  "no-command", the cost of a poll alone), then one
  rollout, and each polls again and gets its sealed FIRMWARE_UPDATE (content key
  wrapped to it at delivery). The difference is the offer's own cost.
* **chunks**: a sample of S devices (default 50) each fetch the 64 encrypted chunks
  over one fresh keep-alive connection to the plain listener.
* **plain file**: S downloads of the 4 MiB file, each on a brand-new TLS connection
  (full handshake, no session resumption), from the baseline process.
* **waves**: 10 freshly enrolled devices updated at once, rollout to ``completed``:
  once speaking the wire contract directly (in memory, no slot), once with the real
  device SDK updater (``hatchway.device.firmware.update_once``: A/B slot files with an
  fsync per chunk, the record, reports) and a trivial installer whose health check
  passes.

The server fills its chunk file cache from the store on the first chunk request of
the release; one GET before the chunk measurement keeps that one-off copy out of it.

Server CPU is the server process's utime+stime from ``/proc/<pid>/stat``; bytes are
counted at the socket (TLS: every handshake and record byte).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bench_e2e import PlainConnection, read_response
from hatchway.cli.main import app
from hatchway.config import settings_from_env
from hatchway.device import Device, DeviceState, StateFile
from hatchway.device.enrol import _proof
from hatchway.device.firmware import FirmwareIdentity, InstallTarget, update_once
from hatchway.firmware import (
    ChunkAssembler,
    ChunkCipher,
    DevicePosition,
    MemoryImage,
    TrustStore,
    check_manifest,
    generate_firmware_key,
    unwrap_content_key,
)
from hatchway.firmware import files as fwfiles
from hatchway.msgsec import MessageType, generate_decryption_key, generate_signing_key
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess, free_port

CLASS = "acme-meter-v2"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks


def cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


class Counting:
    """The SDK's transport: a fresh plain connection per exchange (a device that polls
    now and then holds no idle connection), counting bytes both ways."""

    def __init__(self, port: int) -> None:
        self.port, self.bytes = port, 0

    def __call__(self, url: str, token: bytes) -> bytes:
        conn = PlainConnection(self.port)
        try:
            return conn.post(token)
        finally:
            self.bytes += conn.sent + conn.received
            conn.sock.close()


def enrol(
    ctx: ServerContext,
    device_id: str,
    root: Path,
    port: int,
    firmware: dict[str, Any] | None = None,
) -> Device:
    """Through the real enrolment service (in process, same store), keys of its own;
    ``firmware``: its position and trust (``FirmwareIdentity.to_json()``)."""
    secret = ctx.enrolment.provision(device_id)
    first = ctx.enrolment.issue_first_token(device_id, secret)
    signing, decryption = generate_signing_key(), generate_decryption_key()
    proof = _proof(signing, decryption, device_id, ctx.settings.issuer, first.challenge)
    keys = {
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": proof,
    }
    result = ctx.enrolment.exchange_keys(first.token, keys)
    state = DeviceState(
        device_id=device_id,
        server_id=result["server_id"],
        signing_key=signing.to_jwk(private=True),
        encryption_key=decryption.to_jwk(private=True),
        suite=result["suite"],
        server_keys=result["server_keys"],
        endpoints=result["endpoints"],
        firmware=firmware or {},
    )
    file = StateFile(root / f"{device_id}.json", state)
    file.save()
    return Device(file, transport=Counting(port), retry_for=5)


def poll(device: Device) -> Any:
    kinds = {MessageType.ACK, MessageType.FIRMWARE_UPDATE, MessageType.COMMAND}
    return device._exchange(MessageType.POLL, {}, kinds)


class ChunkClient:
    """GETs over one keep-alive connection; counts bytes both ways."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.port, self.bytes = port, 0

    def get(self, path: str) -> bytes:
        request = f"GET {path} HTTP/1.1\r\nHost: localhost:{self.port}\r\n\r\n".encode()
        self.sock.sendall(request)
        self.bytes += len(request)

        def recv() -> bytes:
            chunk = self.sock.recv(1 << 17)
            self.bytes += len(chunk)
            return chunk

        body, status = read_response(recv)
        assert status == 200, status
        return body

    def close(self) -> None:
        self.sock.close()


def tls_get_new_connection(port: int, context: ssl.SSLContext, path: str) -> tuple[bytes, int]:
    """A full TLS handshake + one GET on a fresh connection; returns (body, wire bytes)."""
    sock = socket.create_connection(("127.0.0.1", port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    wire = 0

    def flush() -> None:
        nonlocal wire
        data = outgoing.read()
        if data:
            wire += len(data)
            sock.sendall(data)

    def pump() -> None:
        nonlocal wire
        data = sock.recv(1 << 17)
        if not data:
            raise ConnectionError("closed")
        wire += len(data)
        incoming.write(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush()
            pump()
    flush()
    tls.write(f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
    flush()

    def recv() -> bytes:
        while True:
            try:
                return tls.read(1 << 17)
            except ssl.SSLWantReadError:
                pump()

    body, status = read_response(recv)
    assert status == 200, status
    sock.close()
    return body, wire


BASELINE = """
import sys, uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse
app = FastAPI()
@app.get("/image")
async def image():
    return FileResponse(sys.argv[1], media_type="application/octet-stream")
extra = {"loop": "asyncio", "http": "h11"} if sys.argv[5] == "h11" else {}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), ssl_certfile=sys.argv[3],
            ssl_keyfile=sys.argv[4], log_level="warning", access_log=False, **extra)
"""


def start_baseline(image: Path, data_dir: Path, stack: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BASELINE, str(image), str(port),
         str(data_dir / "tls.pem"), str(data_dir / "tls.key"), stack],
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("baseline server did not start")


def plain_file(
    image: bytes, path: Path, server: ServerProcess, stack: str, sample: int
) -> tuple[float, float]:
    """Server CPU (ms) and wire bytes per download of the image over a new TLS connection."""
    proc, port = start_baseline(path, server.data_dir, stack)
    try:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        context.options |= ssl.OP_NO_TICKET  # a full handshake every time
        tls_get_new_connection(port, context, "/image")  # warm up
        before, wire = cpu_seconds(proc.pid), 0
        for _ in range(sample):
            body, n = tls_get_new_connection(port, context, "/image")
            assert body == image
            wire += n
        return (cpu_seconds(proc.pid) - before) / sample * 1e3, wire / sample
    finally:
        proc.terminate()
        proc.wait(10)


def download(client: ChunkClient, offer: dict[str, Any], count: int) -> list[bytes]:
    return [client.get(f"{offer['chunks']}{i}") for i in range(count)]


def run(root: Path, image: bytes, devices: int, sample: int) -> dict[str, float]:
    image_path = root / "image.bin"
    image_path.write_bytes(image)
    key = generate_firmware_key()
    keyfile = root / "fw.jwk"
    fwfiles.write_keypair(keyfile, key)
    manifest = root / "m"
    sign = ["--key", str(keyfile), "--image", str(image_path), "--version", "2.1.0"]
    cli("firmware", "sign", *sign, "--sequence", "21", "--class", CLASS, "--out", str(manifest))
    out: dict[str, float] = {}
    env = {"HATCHWAY_LOG_LEVEL": "warning"}
    with ServerProcess(root / "data", env=env) as server:
        data = ["--data-dir", str(server.data_dir)]
        cli("firmware", "trust", str(root / "fw.pub.jwk"), *data)
        cli("firmware", "publish", str(manifest), str(image_path), *data)
        ctx = ServerContext.create(settings_from_env(server.env()))
        try:
            fleet = [enrol(ctx, f"m{i:04d}", root, server.http_port) for i in range(devices)]
        finally:
            ctx.close()
        cli("groups", "add", "bench", *[d.device_id for d in fleet], *data)
        assert server.proc is not None
        pid = server.proc.pid

        # Every device polls twice before the rollout (nothing to deliver): the first
        # warms the server's key cache, the second is the cost of a poll alone.
        assert all(poll(d).typ is MessageType.ACK for d in fleet)
        before = cpu_seconds(pid)
        assert all(poll(d).typ is MessageType.ACK for d in fleet)
        out["empty_poll_cpu_ms"] = (cpu_seconds(pid) - before) / devices * 1e3
        sent = sum(d._transport.bytes for d in fleet)  # type: ignore[attr-defined]
        cli("firmware", "rollout", "2.1.0", "--group", "bench", *data)
        before, t0 = cpu_seconds(pid), time.perf_counter()
        offers = [poll(d) for d in fleet]
        out["offer_wall_s"] = time.perf_counter() - t0
        out["offer_cpu_ms"] = (cpu_seconds(pid) - before) / devices * 1e3
        assert all(o.typ is MessageType.FIRMWARE_UPDATE for o in offers)
        total = sum(d._transport.bytes for d in fleet)  # type: ignore[attr-defined]
        out["offer_bytes"] = (total - sent) / devices

        count = len(image) // 65536 + (1 if len(image) % 65536 else 0)
        warm = ChunkClient(server.http_port)  # the one-off cache fill from the store
        download(warm, offers[0].body, 1)
        warm.close()
        before, wire = cpu_seconds(pid), 0
        for offer in offers[:sample]:
            client = ChunkClient(server.http_port)
            download(client, offer.body, count)
            wire += client.bytes
            client.close()
        out["chunks_cpu_ms"] = (cpu_seconds(pid) - before) / sample * 1e3
        out["chunks_bytes"] = wire / sample

        for stack, name in (("default", "plain"), ("h11", "plain_h11")):
            out[f"{name}_cpu_ms"], out[f"{name}_bytes"] = plain_file(
                image, image_path, server, stack, sample
            )

        cli("firmware", "cancel", "2.1.0", *data)  # the offers above are never reported
        out["wave10_s"] = wave(server, root, image, key.public(), count)
        out["wave10_sdk_s"] = wave_sdk(server, root, key.public())
        for device in fleet:
            device.close()
    return out


def timed_wave(
    server: ServerProcess,
    root: Path,
    group: str,
    update: Callable[[Device], None],
    firmware: dict[str, Any] | None = None,
) -> float:
    """Enrol 10 devices into ``group``, then time ``firmware rollout 2.1.0`` to all 10
    ``update`` calls (one thread each) returning; the first error is raised after."""
    data = ["--data-dir", str(server.data_dir)]
    ctx = ServerContext.create(settings_from_env(server.env()))
    try:
        ten = [enrol(ctx, f"{group}{i}", root, server.http_port, firmware) for i in range(10)]
    finally:
        ctx.close()
    cli("groups", "add", group, *[d.device_id for d in ten], *data)
    errors: list[BaseException] = []

    def guarded(device: Device) -> None:
        try:
            update(device)
        except BaseException as exc:  # reported after the wave
            errors.append(exc)

    start = time.perf_counter()
    cli("firmware", "rollout", "2.1.0", "--group", group, *data)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(guarded, ten))
    elapsed = time.perf_counter() - start
    for device in ten:
        device.close()
    if errors:
        raise errors[0]
    return elapsed


def wave(server: ServerProcess, root: Path, image: bytes, fw_pub: Any, count: int) -> float:
    """A 10-device wave on loopback, wire contract only (no SDK update loop, no A/B slot):
    rollout -> poll -> verify manifest -> unwrap key -> 64 chunks (open + check) ->
    finish -> report verified, installed, confirmed; until the rollout is completed."""
    trust = TrustStore.of(fw_pub)
    position = DevicePosition(CLASS, 20, "2.0.0")

    def update(device: Device) -> None:
        offer = poll(device).body
        manifest = check_manifest(offer["manifest"], trust=trust, position=position,
                                  now=time.time())  # fmt: skip
        key = unwrap_content_key(offer["key"], device._decryption, manifest.sha256)
        cipher = ChunkCipher(key, manifest.sha256)
        assembler = ChunkAssembler(manifest, MemoryImage(manifest.size))
        client = ChunkClient(server.http_port)
        for i in range(count):
            assembler.receive(i, cipher.open(i, client.get(f"{offer['chunks']}{i}")))
        client.close()
        assembler.finish()
        for state in ("verified", "installed", "confirmed"):
            body = {"release": offer["release"], "state": state}
            device._exchange(MessageType.FIRMWARE_REPORT, body, {MessageType.ACK})

    return timed_wave(server, root, "wave", update)


class BenchInstaller:
    """The trivial installer: the verified slot file is the installed image, the
    "boot" is instant and the health check passes."""

    def install(self, target: InstallTarget) -> None:
        assert target.image.stat().st_size == target.manifest.size

    def boot(self, target: InstallTarget) -> None:
        pass

    def health_check(self, target: InstallTarget, timeout: float) -> bool:
        return True

    def confirm(self, target: InstallTarget) -> None:
        pass

    def rollback(self, target: InstallTarget) -> None:
        raise AssertionError(f"rolled back to slot {target.slot}")


def wave_sdk(server: ServerProcess, root: Path, fw_pub: Any) -> float:
    """A 10-device wave on loopback with the device SDK's updater (``update_once``):
    poll, manifest and key checks, 64 chunks over HTTP into the inactive slot file
    (fsync per chunk, download record), ``finish``, install, boot, health check,
    confirm, reports; until the rollout is completed."""
    identity = FirmwareIdentity(CLASS, "2.0.0", 20, TrustStore.of(fw_pub)).to_json()

    def update(device: Device) -> None:
        result = update_once(device, BenchInstaller())
        assert result.state is not None and result.state.value == "confirmed", result

    return timed_wave(server, root, "sdkwave", update, identity)
