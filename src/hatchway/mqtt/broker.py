"""Broker URLs: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://…`` (TLS).

Parsed once, at configuration time, into a small value the adapters connect with.
The password never appears in ``str()``/``public`` forms, so a URL can be logged and
published in discovery metadata without leaking the server's broker credentials.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

#: Socket options for every hatchway MQTT client (aiomqtt ``socket_options``). paho
#: leaves Nagle on, and a handler that writes a PUBACK and then its reply PUBLISH sends
#: two small segments back to back: the second waited for the broker's delayed ACK,
#: about 44 ms, twice per request and reply (measured: 92 ms p50 at one in flight).
TCP_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a broker URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError("a broker URL starts with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("a broker URL names a host, e.g. mqtt://127.0.0.1:1883")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("a broker URL has no path, query or fragment")
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORTS[scheme],
            tls=scheme == "mqtts",
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @property
    def public(self) -> str:
        """The URL without credentials: what devices are told and logs show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.public


def broker_tls(ca_file: str | None) -> ssl.SSLContext:
    """TLS to the broker (``mqtts://``), verified against ``ca_file`` or the system's CAs.

    Optional: the messages protect themselves. TLS keeps broker passwords and traffic
    metadata off the wire.
    """
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
