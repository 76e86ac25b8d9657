"""Run both listeners in one process and stop them cleanly on SIGTERM or SIGINT.

uvicorn installs its own signal handlers per server; with two servers in one loop we
take the signals ourselves and tell both to finish in-flight requests and exit.

With ``--workers N`` (``server/workers.py``) this runs once per worker process: every
worker binds the plain listener with ``SO_REUSEPORT`` on the same port, and only
worker 0 runs the HTTPS listener (see :class:`WorkerRole`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import uvicorn

from hatchway.config import Settings
from hatchway.server.context import ServerContext
from hatchway.server.edge import (
    HTTPS_SHAPE,
    PLAIN_SHAPE,
    Limits,
    bound_tls_handshakes,
    guarded_protocol,
)
from hatchway.server.edge.protocol import KEEP_ALIVE, MAX_HEAD_BYTES
from hatchway.server.https_app import build_https_app
from hatchway.server.logs import configure_logging
from hatchway.server.plain_app import build_plain_app

if TYPE_CHECKING:
    from hatchway.mqtt.gateway import MqttGateway

log = logging.getLogger("hatchway.server")


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Which listeners one process of ``hatchway serve --workers N`` runs.

    Every worker runs the plain listener (sealed messages, the load that needs the
    cores) on the shared port, and the MQTT gateway under its own client id in the
    shared subscription. Only worker 0 runs HTTPS: enrolment, login and the pages are
    light, and login keeps per-process state (the in-process bus that wakes a waiting
    device on SQLite, in-memory rate limits without Redis) that must not be split.
    """

    index: int = 0
    count: int = 1

    @property
    def https(self) -> bool:
        return self.index == 0

    @property
    def shared_port(self) -> bool:
        return self.count > 1


def worker_settings(settings: Settings, role: WorkerRole) -> Settings:
    """Worker ``i > 0`` gets its own MQTT client id (its own persistent session in the
    broker's shared subscription); worker 0 keeps the configured one, so going from one
    worker to several keeps that session."""
    if role.index == 0 or not settings.mqtt_enabled:
        return settings
    from hatchway.mqtt.gateway import default_client_id

    base = settings.mqtt_client_id or default_client_id(settings.https_port)
    return replace(settings, mqtt_client_id=f"{base[:120]}-w{role.index}")


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket with ``SO_REUSEPORT``: every worker binds its own on the same
    port and the kernel spreads new connections over them (Linux only lets processes
    of the same user join a port this way)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket's proto is IPPROTO_TCP (getaddrinfo's, not socket()'s 0).
    # Without it Nagle holds a response's second write for the client's delayed ACK:
    # 44 ms per keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled once, in serve(), for both listeners


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-header handling, off unless ``trusted_proxies`` names proxies.

    uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default, which lets
    any local process (or a co-located reverse proxy's other clients) choose the
    client IP that rate limits and the approval page rely on. Off by default;
    with ``HATCHWAY_TRUSTED_PROXIES=10.0.0.5,10.0.0.6`` only those peers'
    headers count (uvicorn then takes the right-most address they did not add).
    """
    trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def _configs(ctx: ServerContext) -> tuple[uvicorn.Config, uvicorn.Config]:
    s = ctx.settings
    limits = Limits(
        header_timeout=s.header_timeout,
        body_timeout=s.body_timeout,
        max_connections=s.max_connections,
    )
    common = {
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "lifespan": "off",
        # Slow senders and malformed HTTP are handled by the h11 protocol in
        # server/edge: deadlines, the connection cap and JSON error bodies.
        "ws": "none",
        "timeout_keep_alive": KEEP_ALIVE,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        **proxy_options(s),
    }
    https = uvicorn.Config(
        build_https_app(ctx),
        http=guarded_protocol(limits, HTTPS_SHAPE, "https"),
        host=s.host,
        port=s.https_port,
        ssl_certfile=str(ctx.identity.tls_cert_path),
        ssl_keyfile=str(ctx.identity.tls_key_path),
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        **common,
    )
    plain = uvicorn.Config(
        build_plain_app(ctx),
        host=s.host,
        port=s.http_port,
        http=guarded_protocol(limits, PLAIN_SHAPE, "plain"),
        **common,
    )
    return https, plain


def _start_mqtt(ctx: ServerContext) -> MqttGateway | None:
    """The MQTT client runs beside the listeners when ``HATCHWAY_MQTT_URL`` is set; it
    connects (and reconnects, with back-off) in the background, so a broker that is
    down delays MQTT only, never HTTP."""
    if not ctx.settings.mqtt_enabled:
        return None
    from hatchway.mqtt.gateway import MqttGateway

    gateway = MqttGateway(ctx)
    ctx.mqtt_connected = gateway.connected
    gateway.start()
    return gateway


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[ServerContext], None] | None = None,
    role: WorkerRole | None = None,
    commit_link: Connection | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. ``commit_link``: a worker's link to the writer it
    shares with the other workers (``flows/ingest/remote.py``)."""
    role = role or WorkerRole()
    configure_logging(settings.log_level, worker=role.index if role.shared_port else None)
    ctx = ServerContext.create(worker_settings(settings, role))
    if commit_link is not None:
        from hatchway.flows.ingest.remote import RemoteCommitter

        ctx.messages.committer = RemoteCommitter(commit_link)
    https, plain = _configs(ctx)
    servers = [_Server(https), _Server(plain)] if role.https else [_Server(plain)]
    loop = asyncio.get_running_loop()
    bound_tls_handshakes(loop, settings.header_timeout)

    def stop(signum: int) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        for server in servers:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    gateway: MqttGateway | None = None
    try:
        # The bus listens (PostgreSQL: LISTEN on one connection) before any request
        # can wait on it, and is closed with the server rather than left to the GC.
        await ctx.bus.start()
        gateway = _start_mqtt(ctx)
        # uvicorn binds its own sockets, except the shared plain port, bound here.
        shared = [shared_socket(settings.host, settings.http_port)] if role.shared_port else None
        tasks = [asyncio.create_task(server.serve()) for server in servers[:-1]]
        tasks.append(asyncio.create_task(servers[-1].serve(sockets=shared)))
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break  # a listener failed to start (port taken...): stop the other one
            await asyncio.sleep(0.02)
        if all(server.started for server in servers):
            log.info(
                "listening",
                extra={
                    "https": ctx.settings.issuer,
                    "plain": ctx.settings.plain_base_url,
                    "data_dir": str(ctx.settings.data_dir),
                    "https_listener": role.https,
                },
            )
            if on_ready:
                on_ready(ctx)
        else:
            stop(signal.SIGTERM)
        await asyncio.gather(*tasks)
        failed = [s for s in servers if not s.started]
        if failed:
            raise SystemExit(1)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if gateway is not None:
            await gateway.stop()
        await ctx.bus.close()
        ctx.close()
        log.info("stopped")
