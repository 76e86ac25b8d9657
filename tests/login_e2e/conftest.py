"""Fixtures for the cross-device login end-to-end tests: a real ``hatchway serve``,
the real ``hatchway`` CLI as the device, and real Chromium (Playwright) as the phone."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import httpx
import pytest

from hatchway.server.process import ServerProcess
from tests.services import CHROMIUM, CHROMIUM_ARGS, require_chromium

PASSWORD = "correct horse battery staple"


def add_user(server: ServerProcess, username: str, password: str = PASSWORD) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hatchway",
            "users",
            "add",
            username,
            "--password-stdin",
            "--iterations",
            "4096",
            "--json",
        ],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        env=server.env(),
    )


def add_client(server: ServerProcess, client_id: str, *args: str) -> dict[str, Any]:
    """``hatchway clients add CLIENT_ID --name … [args]`` against the server's data dir."""
    name = ("--name", f"{client_id} app") if "--name" not in args else ()
    added = hatchway(server, "clients", "add", client_id, *name, *args)
    assert added["_rc"] == 0, added
    return added


def hatchway(server: ServerProcess, *args: str, input: str | None = None) -> dict[str, Any]:
    """Run an operator or client CLI command with ``--json``; returns its JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", *args, "--json"],
        input=input,
        text=True,
        capture_output=True,
        env=server.env(),
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    result["_rc"] = done.returncode
    return result


class DeviceCli:
    """``hatchway login --json`` as a subprocess, read one JSON line at a time."""

    def __init__(self, server: ServerProcess, tmp: Path, username: str, *extra: str) -> None:
        self.tokens = tmp / f"tokens-{username}-{time.monotonic_ns()}.json"
        env = server.env()
        env["HATCHWAY_CA_FILE"] = str(server.ca_file)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hatchway",
                "login",
                "--server",
                server.https_url,
                "--username",
                username,
                "--device-name",
                "Living-room TV",
                "--tokens",
                str(self.tokens),
                "--json",
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: Queue[dict[str, Any]] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except Empty:
            self.proc.kill()
            raise AssertionError(f"no output from hatchway login: {self.stderr()}") from None

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def start_server(tmp: Path, **env: str) -> ServerProcess:
    server = ServerProcess(tmp / "data", env=env)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default anti-phishing (confirm-code) for every client:
    ``hatchway-cli`` (registered on first run), ``tv`` and ``other``.

    Every test of a module shares its address (127.0.0.1), so the per-IP code
    lookups (10 a minute by default) are raised: otherwise the random order decides
    which test finds the budget spent. The limit itself is tested on its own server.
    """
    proc = start_server(tmp_path_factory.mktemp("login"), HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE="120")
    try:
        add_client(proc, "tv", "--name", "Living-room TV app", "--scope", "profile")
        add_client(proc, "other", "--scope", "profile")
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def https(server: ServerProcess) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(base_url=server.https_url, verify=context, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def no_js_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(ignore_https_errors=True, java_script_enabled=False)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # The dev CA is not in Chromium's store; the page is still a secure context
    # (localhost), which WebCrypto's subtle API requires.
    context = browser.new_context(ignore_https_errors=True)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(autouse=True)
def _no_ci_proxy() -> None:
    os.environ.pop("HTTPS_PROXY", None)
