"""Two real ``hatchway serve`` replicas on one PostgreSQL database.

ARCHITECTURE.md: "PostgreSQL LISTEN/NOTIFY serves several server replicas. A
login approved on one replica must wake the device that waits on another."

Replica A starts first and creates the data dir (CA, TLS certificate, message
keys, application identity); replica B gets a copy of those files, as a second
machine would. Both run with the same public URLs (A's ports: what a load
balancer in front of them would publish), so tokens, proofs and sealed messages
issued by one are checked against the same issuer by the other. A client that
should reach B uses :class:`ToReplica`, which sends requests for the public
origin to B's port: the load balancer's job, pinned.

Each module run gets a fresh PostgreSQL database (so a NOTIFY on the bus
channel reaches only these two replicas), dropped afterwards. Without
PostgreSQL the tests skip locally and fail when CI=true.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from hatchway.bus import postgres_conninfo
from hatchway.server.process import ServerProcess, free_port
from tests.services import require

PG_URL = os.environ.get(
    "HATCHWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ADMIN_CONNINFO = postgres_conninfo(PG_URL)


class ToReplica(httpx.BaseTransport):
    """Send requests for the public origin to one replica's port (a pinned load balancer).

    ``paths`` sends some paths to other ports instead: a balancer that spreads
    one client's consecutive requests over replicas.
    """

    def __init__(
        self,
        public: str,
        port: int,
        *,
        verify: ssl.SSLContext | bool = True,
        paths: dict[str, int] | None = None,
    ) -> None:
        self._public = httpx.URL(public)
        self._port = port
        self._paths = paths or {}
        self._inner = httpx.HTTPTransport(verify=verify)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, url.host, url.port) == (
            self._public.scheme,
            self._public.host,
            self._public.port,
        ):
            request.url = url.copy_with(port=self._paths.get(url.path, self._port))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


@dataclass
class Replicas:
    a: ServerProcess
    b: ServerProcess
    public_https: str
    public_http: str
    database_url: str

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.a.ca_file))

    def https_client(
        self, replica: ServerProcess, *, paths: dict[str, ServerProcess] | None = None
    ) -> httpx.Client:
        """An HTTPS client whose requests for the public URL land on ``replica``
        (or, for the ``paths`` given, on the replica named there)."""
        transport = ToReplica(
            self.public_https,
            replica.https_port,
            verify=self.tls(),
            paths={path: server.https_port for path, server in (paths or {}).items()},
        )
        return httpx.Client(transport=transport, timeout=30, trust_env=False)


def _pg_reachable() -> bool:
    try:
        with psycopg.connect(ADMIN_CONNINFO, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named ``prefix_<random>``; dropped afterwards."""
    require(_pg_reachable(), f"PostgreSQL at {ADMIN_CONNINFO}")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_CONNINFO, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(ADMIN_CONNINFO, autocommit=True) as admin:
            # FORCE: a replica killed without closing its pool must not keep it alive.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module."""
    with fresh_database("hw_replicas") as url:
        yield url


@contextmanager
def start_replicas(
    root: Path, database_url: str, extra_env: dict[str, str] | None = None
) -> Iterator[Replicas]:
    """Start A, copy its identity to B, start B; both with ``extra_env`` too."""
    a_https, a_http = free_port(), free_port()
    public_https, public_http = f"https://localhost:{a_https}", f"http://localhost:{a_http}"
    env = {
        "HATCHWAY_DATABASE_URL": database_url,
        "HATCHWAY_PUBLIC_HTTPS_URL": public_https,
        "HATCHWAY_PUBLIC_HTTP_URL": public_http,
        **(extra_env or {}),
    }
    a = ServerProcess(root / "a", https_port=a_https, http_port=a_http, env=env)
    b = ServerProcess(root / "b", env=env)
    try:
        a.start()
        _copy_identity(a.data_dir, b.data_dir)
        b.start()
        # Issue 8 §1: only registered clients may sign in (one store, both replicas).
        # phone-number mode: these tests follow a match number across replicas.
        subprocess.run(
            [
                *(sys.executable, "-m", "hatchway", "clients", "add", "tv", "--name", "TV"),
                *("--anti-phishing", "phone-number", "--json"),
            ],
            check=True,
            capture_output=True,
            env=a.env(),
            timeout=60,
        )
        yield Replicas(a, b, public_https, public_http, database_url)
    finally:
        b.stop()
        a.stop()


def replica_pair(
    root: Path,
    env: dict[str, str],
    *,
    name: str,
    a_ports: tuple[int, int] | None = None,
    b_ports: tuple[int, int] | None = None,
) -> tuple[ServerProcess, ServerProcess]:
    """Replicas A and B (not started) with one environment and an MQTT session each:
    a client id of their own, stable for the run (``name-a-…``, ``name-b-…``)."""
    tag = secrets.token_hex(4)
    pair = []
    for which, ports in (("a", a_ports), ("b", b_ports)):
        https, http = ports or (free_port(), free_port())
        own = {**env, "HATCHWAY_MQTT_CLIENT_ID": f"{name}-{which}-{tag}"}
        pair.append(ServerProcess(root / which, https_port=https, http_port=http, env=own))
    return pair[0], pair[1]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Replicas]:
    with start_replicas(tmp_path_factory.mktemp("replicas"), database_url) as both:
        yield both


def _copy_identity(src: Path, dst: Path) -> None:
    """What a second machine is given: every file of the data dir (no SQLite: PostgreSQL)."""
    dst.mkdir(mode=0o700)
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith("hatchway.sqlite3"):
            shutil.copy2(path, dst / path.name)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback only: the SDK's own httpx clients must not be sent through a CI proxy.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
