"""``hatchway serve --workers 2`` end to end (issue 10 §1), on SQLite and PostgreSQL.

A real supervisor with two worker processes on one plain port (``SO_REUSEPORT``):
messages over many connections are all stored exactly once whichever worker took
them, a replay is refused whichever worker it reaches, SIGKILL of the whole process
group loses nothing acknowledged, a worker killed alone is replaced, a worker that
cannot start stops the server with exit code 1, and SIGTERM stops every process with
exit code 0. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.server.context import ServerContext
from hatchway.server.process import ServerProcess, free_port
from tests.e2e.test_kill9_e2e import Recorder

pytestmark = pytest.mark.e2e

DEVICES = 8
MESSAGES = 12
JOSE = {"content-type": "application/jose"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Server environment for two workers on a fresh store of each kind."""
    env = {"HATCHWAY_WORKERS": "2"}
    if request.param == "sqlite":
        yield env
        return
    from tests.replicas.conftest import fresh_database

    with fresh_database("hw_workers") as url:
        yield {**env, "HATCHWAY_DATABASE_URL": url}


def operator(server: ServerProcess) -> ServerContext:
    return ServerContext.create(settings_from_env(server.env()))


def enrol_all(server: ServerProcess, root: Path, transports: list[Recorder]) -> list[Device]:
    ctx = operator(server)
    try:
        secrets = [ctx.enrolment.provision(f"meter-{i}") for i in range(len(transports))]
    finally:
        ctx.close()
    return [
        Device.enroll(
            server=server.https_url,
            device_id=f"meter-{i}",
            secret=secret,
            state_path=root / f"meter-{i}.json",
            ca_file=server.ca_file,
            transport=transport,
            retry_for=60,
        )
        for i, (secret, transport) in enumerate(zip(secrets, transports, strict=True))
    ]


def stream(devices: list[Device], count: int, acked: dict[str, list[int]]) -> list[BaseException]:
    """Every device sends ``count`` messages on its own connection, all at once."""
    errors: list[BaseException] = []

    def one(device: Device) -> None:
        try:
            for n in range(count):
                ack = device.send({"n": n})
                assert ack.body["status"] in ("stored", "duplicate")
                acked[device.device_id].append(n)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a device did not finish"
    return errors


def stored_once(server: ServerProcess, acked: dict[str, list[int]]) -> int:
    """Every acknowledged message is stored exactly once; returns the total stored."""
    ctx = operator(server)
    try:
        total = 0
        for device_id, numbers in acked.items():
            stored = ctx.store.list_messages(device_id, limit=1000)
            counts = Counter(m.body["readings"]["n"] for m in stored)
            assert set(counts) == set(numbers), device_id
            assert {n: c for n, c in counts.items() if c != 1} == {}, device_id
            total += ctx.store.count_messages(device_id)
        return total
    finally:
        ctx.close()


def replays_refused(server: ServerProcess, tokens: list[bytes]) -> None:
    """Each replay on a new connection, so the kernel spreads them over the workers."""
    for token in tokens:
        with httpx.Client(timeout=10) as client:
            answer = client.post(server.http_url + "/m", content=token, headers=JOSE)
        assert answer.status_code == 400


def workers_that_answered(server: ServerProcess) -> set[int]:
    """The workers whose access log shows a ``POST /m``."""
    workers = set()
    for line in server.log_path.read_text().splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("path") == "/m":
            workers.add(record.get("worker"))
    return workers


def gone(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_two_workers_store_once_refuse_replays_and_stop_cleanly(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    server = ServerProcess(tmp_path / "data", env={**store_env, "HATCHWAY_LOG_LEVEL": "info"})
    server.start(timeout=90)  # three interpreters start on a loaded machine
    transports = [Recorder() for _ in range(DEVICES)]
    try:
        pids = server.pids
        assert len(pids) >= 3  # the supervisor and two workers (and mp's resource tracker)
        devices = enrol_all(server, tmp_path, transports)
        acked: dict[str, list[int]] = {d.device_id: [] for d in devices}
        assert stream(devices, MESSAGES, acked) == []
        assert all(numbers == list(range(MESSAGES)) for numbers in acked.values())
        total = stored_once(server, acked)
        assert total == DEVICES * MESSAGES

        replays_refused(server, [t for r in transports for t in r.acked])
        assert stored_once(server, acked) == total
        assert workers_that_answered(server) == {0, 1}  # ~100 connections: both took some
        for device in devices:
            device.close()
        assert server.stop() == 0  # SIGTERM: every worker drains and exits 0
        assert gone(pids), "a worker outlived SIGTERM"
    finally:
        for transport in transports:
            transport.close()
        server.stop()


def test_kill_9_of_the_whole_serve_loses_nothing_acknowledged(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    server = ServerProcess(tmp_path / "data", env=store_env)
    server.start(timeout=90)  # three interpreters start on a loaded machine
    transports = [Recorder() for _ in range(DEVICES)]
    try:
        devices = enrol_all(server, tmp_path, transports)
        acked: dict[str, list[int]] = {d.device_id: [] for d in devices}
        errors: list[BaseException] = []
        sender = threading.Thread(target=lambda: errors.extend(stream(devices, 40, acked)))
        sender.start()
        for threshold in (60, 180):
            deadline = time.monotonic() + 120
            while sum(map(len, acked.values())) < threshold and time.monotonic() < deadline:
                time.sleep(0.002)
            pids = server.pids
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            assert gone(pids), "kill -9 left a worker running"
            server.start(timeout=90)
        sender.join(timeout=240)
        assert not sender.is_alive() and errors == []
        assert all(numbers == list(range(40)) for numbers in acked.values())
        total = stored_once(server, acked)
        assert total == DEVICES * 40
        replays_refused(server, [t for r in transports for t in r.acked])
        late = [t for r in transports for t in r.lost]
        with httpx.Client(timeout=10) as client:
            for token in late:  # a copy that never reached the server adds nothing
                client.post(server.http_url + "/m", content=token, headers=JOSE)
        assert stored_once(server, acked) == total
        for device in devices:
            device.close()
    finally:
        for transport in transports:
            transport.close()
        server.stop()


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"HATCHWAY_WORKERS": "2"})
    server.start(timeout=90)  # three interpreters start on a loaded machine
    transports = [Recorder() for _ in range(4)]
    try:
        devices = enrol_all(server, tmp_path, transports)
        victim = _worker_pids(server)[-1]  # spawned last: worker 1
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "worker 1 replaced" in server.log_path.read_text():
                break
            time.sleep(0.1)
        assert victim not in _worker_pids(server) and len(_worker_pids(server)) == 2
        assert "worker 1 exited with -9; starting a new one" in server.log_path.read_text()
        acked: dict[str, list[int]] = {d.device_id: [] for d in devices}
        assert stream(devices, 5, acked) == []  # both workers answer again
        assert stored_once(server, acked) == 20
        for device in devices:
            device.close()
        assert server.stop() == 0
    finally:
        for transport in transports:
            transport.close()
        server.stop()


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    taken = socket.socket()  # the plain port, held without SO_REUSEPORT
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        env = {
            **os.environ,
            "HATCHWAY_DATA_DIR": str(tmp_path / "data"),
            "HATCHWAY_HTTP_PORT": str(taken.getsockname()[1]),
            "HATCHWAY_HTTPS_PORT": str(free_port()),
            "HATCHWAY_WORKERS": "2",
        }
        done = subprocess.run(
            [sys.executable, "-m", "hatchway", "serve"],
            env=env,
            capture_output=True,
            timeout=120,
        )
    finally:
        taken.close()
    assert done.returncode == 1
    assert b"before it was ready" in done.stderr


def _worker_pids(server: ServerProcess) -> list[int]:
    """The supervisor's children running a worker (not multiprocessing's tracker)."""
    return [pid for pid in server.pids[1:] if "resource_tracker" not in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
