"""Real brokers for the MQTT tests: the machine's Mosquitto, or one of our own.

``MosquittoProcess`` starts ``mosquitto -c FILE`` on a free loopback port with a
password file (made by ``mosquitto_passwd``) and an ACL file, for tests that need the
broker's own access control; it stops the broker it started, by its pid.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx

from hatchway.server.process import ServerProcess, free_port
from tests.services import port_open, require, require_program

SYSTEM_BROKER = ("127.0.0.1", 1883)


def require_system_broker() -> str:
    require(port_open(*SYSTEM_BROKER), "Mosquitto on 127.0.0.1:1883")
    return f"mqtt://{SYSTEM_BROKER[0]}:{SYSTEM_BROKER[1]}"


def unique_prefix() -> str:
    """Topics of one test, apart from every other test sharing the broker."""
    return f"t{secrets.token_hex(4)}/hatchway"


class MosquittoProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        acl_file: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        extra: str = "",
    ) -> None:
        self.mosquitto = require_program("mosquitto")
        self.passwd = require_program("mosquitto_passwd")
        self.workdir = workdir
        self.port = free_port()
        self.users = users or {}
        self.acl_file = acl_file
        self.tls = tls  # (certificate, key): the listener speaks only TLS
        self.extra = extra  # more configuration lines, e.g. "log_type all\n"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwords = self.workdir / "passwd"
        passwords.write_text("")
        passwords.chmod(0o600)
        for user, password in self.users.items():
            subprocess.run(
                [self.passwd, "-b", str(passwords), user, password], check=True, timeout=10
            )
        conf = self.workdir / "mosquitto.conf"
        access = (
            f"allow_anonymous false\npassword_file {passwords}\nacl_file {self.acl_file}\n"
            if self.acl_file is not None
            else "allow_anonymous true\n"
        )
        tls = f"certfile {self.tls[0]}\nkeyfile {self.tls[1]}\n" if self.tls else ""
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + tls
            + access
            + "persistence false\n"
            + self.extra
            # Started as root, mosquitto would switch to its own user, which cannot
            # read files under pytest's private tmp dir; it stays the test's user.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.mosquitto, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start; see {self.workdir}/mosquitto.log")
            time.sleep(0.05)

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        if self.tls:
            return f"mqtts://{auth}localhost:{self.port}"
        return f"mqtt://{auth}127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_mqtt(server: ServerProcess, timeout: float = 20.0) -> None:
    """Until the server's gateway holds its shared subscription (``/healthz``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.http_url + "/healthz", timeout=2).json().get("mqtt") == "connected":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the server's MQTT gateway did not connect; see {server.log_path}")


def mqtt_server(data_dir: Path, *, url: str, prefix: str, **env: str) -> ServerProcess:
    return ServerProcess(
        data_dir,
        env={
            "HATCHWAY_MQTT_URL": url,
            "HATCHWAY_MQTT_TOPIC_PREFIX": prefix,
            "HATCHWAY_MQTT_CLIENT_ID": f"hatchway-test-{secrets.token_hex(4)}",
            **env,
        },
    )
