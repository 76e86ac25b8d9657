"""Run both listeners in one process and stop them cleanly on SIGTERM or SIGINT.

uvicorn installs its own signal handlers per server; with two servers in one loop we
take the signals ourselves and tell both to finish in-flight requests and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable, Generator
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
    settings: Settings, *, on_ready: Callable[[ServerContext], None] | None = None
) -> None:
    configure_logging(settings.log_level)
    ctx = ServerContext.create(settings)
    servers = [_Server(config) for config in _configs(ctx)]
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
        tasks = [asyncio.create_task(server.serve()) for server in servers]
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
