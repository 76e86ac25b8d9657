"""Start and stop a real ``hatchway serve`` subprocess (used by ``hatchway demo`` and tests).

Ports are picked free on loopback; readiness is when both listeners answer.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_children(pid: int) -> list[int]:
    """Child pids of ``pid`` (Linux ``/proc``); empty where that is not available."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        https_port: int | None = None,
        http_port: int | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.https_port = https_port or free_port()
        self.http_port = http_port or free_port()
        self.extra_env = env or {}
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HATCHWAY_DATA_DIR=str(self.data_dir),
            HATCHWAY_HTTPS_PORT=str(self.https_port),
            HATCHWAY_HTTP_PORT=str(self.http_port),
            HATCHWAY_HOST="127.0.0.1",
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hatchway", "serve"],
            env=self.env(),
            stdout=log,
            stderr=log,
            # Its own process group: SIGKILL reaches every worker of ``--workers N``.
            process_group=0,
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"hatchway serve exited with {self.proc.returncode}; see {self.log_path}"
                )
            if self.ca_file.exists() and self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"hatchway serve was not ready in {timeout}s; see {self.log_path}")

    def _answers(self) -> bool:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            httpx.get(self.http_url + "/healthz", timeout=1).raise_for_status()
            meta = self.https_url + "/.well-known/oauth-authorization-server"
            httpx.get(meta, verify=context, timeout=1).raise_for_status()
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return False
        return True

    @property
    def pids(self) -> list[int]:
        """The server's process and, with ``HATCHWAY_WORKERS``, its workers (Linux)."""
        if self.proc is None:
            return []
        return [self.proc.pid, *process_children(self.proc.pid)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the server (SIGTERM: graceful) and return its exit code.

        SIGKILL goes to the whole process group: the supervisor and every worker die
        at once, as in a crash of the machine's server process tree."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self) -> int:
        code = self.stop()
        self.start()
        return code

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
