"""A real ``hatchway serve``, real device processes and an HTTP proxy that can misbehave.

Each device is enrolled by the real CLI (``device enroll --class ... --firmware-version
2.0.0 --firmware-sequence 20``) and updated by the real CLI (``device update
--install-cmd``) in its own process. A device's ``endpoints.messages`` is pointed at
its own ``ChunkProxy`` in front of the server's plain listener, so a test can slow the
chunks down (to kill the device mid-download), flip a byte of one chunk once (to see
it fetched again), and count what each device fetched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hatchway.cli.main import app
from hatchway.pki.files import write_private
from hatchway.server.process import ServerProcess
from tests.firmware.conftest import image_bytes

CLASS = "acme-meter-v2"
INSTALLER = """
import json, os, sys
phase = sys.argv[1] if len(sys.argv) > 1 else "health"
log = os.path.join(os.environ["DEVICE_DIR"], "phases")
with open(log, "a") as fh:
    fh.write(json.dumps({"phase": phase, "slot": os.environ["HATCHWAY_FW_SLOT"],
                         "version": os.environ["HATCHWAY_FW_VERSION"]}) + "\\n")
if phase == "install":
    with open(os.environ["HATCHWAY_FW_IMAGE"], "rb") as src:
        data = src.read()
    with open(os.path.join(os.environ["DEVICE_DIR"], "flashed.bin"), "wb") as dst:
        dst.write(data)
if phase == "health" and os.environ.get("SLOW_HEALTH"):
    import time
    time.sleep(float(os.environ["SLOW_HEALTH"]))
if phase == "health" and os.environ.get("UNHEALTHY"):
    print("service did not come up", file=sys.stderr)
    sys.exit(1)
"""


def cli(*args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    value = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


class ChunkProxy(ThreadingHTTPServer):
    """Forwards everything to the plain listener; chunk GETs can be slowed or corrupted."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.client = httpx.Client(base_url=upstream, timeout=20)
        self.delay = 0.0
        self.flip_once: set[int] = set()
        self.chunks: list[int] = []  # chunk indexes served, in order
        self.inflight = 0  # requests being forwarded right now
        self.lock = threading.Lock()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being forwarded (one a killed device left behind)."""
        deadline = time.monotonic() + timeout
        while self.inflight:
            assert time.monotonic() < deadline, "the proxy never settled"
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ChunkProxy

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        with self.server.lock:
            self.server.inflight += 1
        try:
            self._relay(method)
        finally:
            with self.server.lock:
                self.server.inflight -= 1

    def _relay(self, method: str) -> None:
        proxy = self.server
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {"content-type": self.headers.get("content-type", "application/octet-stream")}
        got = proxy.client.request(method, self.path, content=body, headers=headers)
        content = got.content
        if method == "GET" and self.path.startswith("/fw/") and got.status_code == 200:
            index = int(self.path.rsplit("/", 1)[1])
            time.sleep(proxy.delay)
            with proxy.lock:
                proxy.chunks.append(index)
                if index in proxy.flip_once:
                    proxy.flip_once.discard(index)
                    flipped = bytearray(content)
                    flipped[len(flipped) // 2] ^= 0x40
                    content = bytes(flipped)
        try:
            self.send_response(got.status_code)
            self.send_header("content-type", got.headers.get("content-type", "text/plain"))
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the device was killed mid-request


class DeviceProc:
    """One device: its directory, state file, proxy, and the CLI run as a process."""

    def __init__(
        self, root: Path, name: str, server: ServerProcess, *, via: ServerProcess | None = None
    ) -> None:
        """Enrolled through ``server``; messages and chunks go to ``via`` (default: the
        same server), another replica behind the same store."""
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.state = self.dir / f"{name}.json"
        self.server = server
        self.proxy = ChunkProxy((via or server).http_url)
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        self.installer = self.dir / "install.py"
        self.installer.write_text(INSTALLER)
        self.env = {
            **os.environ,
            "DEVICE_DIR": str(self.dir),
            "PYTHONPATH": os.pathsep.join(
                [str(Path("src").resolve()), os.environ.get("PYTHONPATH", "")]
            ),
        }

    def enroll(self, secret: str, *extra: str) -> dict[str, Any]:
        done = subprocess.run(
            [
                sys.executable, "-m", "hatchway", "device", "enroll", "--server",
                self.server.https_url, "--device-id", self.name, "--state", str(self.state),
                "--ca", str(self.server.ca_file), "--class", CLASS, "--json", *extra,
            ],
            env={**self.env, "HATCHWAY_ENROLMENT_SECRET": secret},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        # Messages and chunks of this device go through its proxy.
        data = json.loads(self.state.read_text())
        data["endpoints"]["messages"] = self.proxy.url + "/m"
        write_private(self.state, json.dumps(data).encode())
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert isinstance(out, dict)
        return out

    def update_cmd(self) -> list[str]:
        return [
            sys.executable, "-m", "hatchway", "device", "update", "--state", str(self.state),
            "--install-cmd", f"{sys.executable} {self.installer}", "--json",
        ]  # fmt: skip

    def start_update(self, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.update_cmd(),
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def update(self, code: int = 0, **env: str) -> dict[str, Any]:
        proc = self.start_update(**env)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == code, out + err
        value = json.loads(out.strip().splitlines()[-1])
        assert isinstance(value, dict)
        return value

    def phases(self) -> list[str]:
        path = self.dir / "phases"
        if not path.exists():
            return []
        return [json.loads(line)["phase"] for line in path.read_text().splitlines()]

    def firmware(self) -> dict[str, Any]:
        fw = json.loads(self.state.read_text())["firmware"]
        assert isinstance(fw, dict)
        return fw

    def close(self) -> None:
        self.proxy.shutdown()
        self.proxy.client.close()
        self.proxy.server_close()


class Fleet:
    """The server, the operator's firmware key, and two enrolled device processes."""

    def __init__(
        self, root: Path, server: ServerProcess, *, database_url: str | None = None
    ) -> None:
        self.root = root
        self.server = server
        self.data = ["--data-dir", str(server.data_dir)]
        if database_url is not None:  # replicas on PostgreSQL
            self.data += ["--database-url", database_url]
        self.key = root / "fw.jwk"
        cli("firmware", "keygen", "--out", str(self.key))
        cli("firmware", "trust", str(root / "fw.pub.jwk"), *self.data)
        self.devices: list[DeviceProc] = []

    def add_devices(
        self, *names: str, enroll: tuple[str, ...] = (), via: ServerProcess | None = None
    ) -> list[DeviceProc]:
        for name in names:
            secret = cli("device", "provision", name, *self.data)["secret"]
            device = DeviceProc(self.root, name, self.server, via=via)
            self.devices.append(device)
            device.enroll(
                secret, "--firmware-version", "2.0.0", "--firmware-sequence", "20", *enroll
            )
        cli("groups", "add", "pilot", *names, *self.data)
        return self.devices

    def publish(
        self, version: str, sequence: int, size: int, *, key: Path | None = None
    ) -> tuple[str, bytes]:
        image = image_bytes(size, seed=version.encode())
        path = self.root / f"meter-{version}.bin"
        path.write_bytes(image)
        manifest = self.root / f"{version}.manifest"
        cli(
            "firmware", "sign", "--key", str(key or self.key), "--image", str(path),
            "--version", version, "--sequence", str(sequence), "--class", CLASS,
            "--out", str(manifest),
        )  # fmt: skip
        release = cli("firmware", "publish", str(manifest), str(path), *self.data)["release"]
        return str(release), image

    def status(self, version: str) -> dict[str, Any]:
        return cli("firmware", "status", version, *self.data)

    def close(self) -> None:
        for device in self.devices:
            device.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    server = ServerProcess(tmp_path / "data")
    server.start()
    fleet = Fleet(tmp_path, server)
    try:
        yield fleet
    finally:
        fleet.close()
        server.stop()
