"""Server settings: defaults, then ``HATCHWAY_*`` environment variables, then flags.

Every setting has an embedded default so that ``hatchway serve`` on a fresh machine
runs with nothing but Python installed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hatchway.errors import ConfigurationError
from hatchway.mqtt.acl import check_server_user
from hatchway.mqtt.broker import BrokerUrl
from hatchway.mqtt.topics import check_prefix, check_share_group


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hatchway"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    https_port: int = 8443
    http_port: int = 8080
    #: SQLAlchemy URL; empty means SQLite inside the data dir.
    database_url: str = ""
    #: Externally visible base URLs; empty means derived from host and ports.
    public_https_url: str = ""
    public_http_url: str = ""
    #: Lifetime of the single-use first token (issue: at most 5 minutes).
    first_token_ttl: int = 300
    #: Lifetime the server gives its own sealed replies.
    message_ttl: int = 300
    #: Upper bound on a sealed message, checked before any parsing.
    max_message_size: int = 65536
    #: Size of the per-device sliding replay window over sequence numbers.
    replay_window: int = 64
    #: Seconds a device's old signing key stays accepted after it rotated its keys
    #: (docs/key-rotation.md); then only the new keys work.
    device_key_overlap: int = 24 * 3600
    #: How often (seconds) each replica re-reads the server's message-key generations
    #: from the store, so that ``hatchway keys rotate`` reaches it without a restart.
    server_key_refresh: int = 10
    log_level: str = "info"
    #: Cross-device login (issue 3): RFC 8628 ``expires_in`` and ``interval``.
    login_expires_in: int = 300
    login_interval: int = 5
    #: Lifetimes of the access token (JWT) and of each rotated refresh token.
    login_access_token_ttl: int = 600
    login_refresh_token_ttl: int = 30 * 24 * 3600
    #: Absolute end of a sign-in, counted from the sign-in: refreshing never
    #: extends a session past it (issue 8 §3).
    login_refresh_max_lifetime: int = 90 * 24 * 3600
    #: A refresh token presented again this soon after its rotation is a client
    #: retry and gets the same successor; later it is reuse and ends the session.
    login_refresh_reuse_interval: int = 10
    #: Device authorization requests each client IP may start per minute.
    login_start_per_minute: int = 30
    #: Approval-page code lookups and password attempts per client IP per minute.
    login_attempts_per_minute: int = 10
    #: Wrong password proofs one login session may see before it is denied.
    login_session_max_failures: int = 5
    #: PBKDF2 iterations for new SCRAM verifiers (``hatchway users add``), and
    #: for decoy verifiers unless ``users add`` recorded another count in the store.
    login_scram_iterations: int = 600_000
    #: Comma-separated proxy IP addresses or networks whose X-Forwarded-For / -Proto is
    #: believed; empty means the client IP is the TCP peer, whatever headers say.
    trusted_proxies: str = ""
    #: Seconds a client has to send a whole request head, then its body (issue 7:
    #: slow senders), and how many connections each listener keeps open at most.
    header_timeout: int = 10
    body_timeout: int = 30
    max_connections: int = 1000
    #: Server processes (``hatchway serve --workers``): each runs the plain message
    #: listener on the shared port (``SO_REUSEPORT``); worker 0 also runs HTTPS.
    workers: int = 1
    #: Redis URL (``redis://``, ``rediss://`` or ``unix://``) for rate limits, attempt
    #: counters and single-use ids shared by every replica; empty keeps them in memory.
    redis_url: str = ""
    #: Namespace of every Redis key hatchway writes (deployments sharing one server).
    redis_prefix: str = "hatchway:"
    #: MQTT transport (docs/mqtt.md): off while empty, else ``mqtt://user:pass@host:port``
    #: (or ``mqtts://``) with the server's own broker credentials.
    mqtt_url: str = ""
    #: The MQTT 5 shared-subscription group every replica joins (``$share/<group>/…``).
    mqtt_share_group: str = "hatchway"
    #: Topics live under ``<prefix>/d/<device_id>/up|down``.
    mqtt_topic_prefix: str = "hatchway/v1"
    #: The broker URL devices are told; empty means ``mqtt_url`` without credentials.
    mqtt_public_url: str = ""
    #: This replica's MQTT client id (its persistent session); empty means derived
    #: from the host name and the HTTPS port, so each replica on a host differs.
    mqtt_client_id: str = ""
    #: CA bundle the server trusts for an ``mqtts://`` broker; empty: the system's.
    mqtt_ca_file: str = ""
    #: Seconds the broker keeps this replica's session after it disconnects. Long: a
    #: replica that restarts gets its unacknowledged uplinks back. Short: one that never
    #: returns stops taking a share sooner (Mosquitto keeps dealing uplinks to an
    #: offline member's session until it expires; docs/scaling.md).
    mqtt_session_expiry: int = 300

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hatchway.sqlite3'}"

    @property
    def mqtt_enabled(self) -> bool:
        return bool(self.mqtt_url)

    @property
    def mqtt_broker(self) -> BrokerUrl:
        """The broker the server connects to (only when ``mqtt_enabled``)."""
        return BrokerUrl.parse(self.mqtt_url)

    @property
    def mqtt_device_broker(self) -> str:
        """The broker URL (no credentials) that enrolment and metadata give devices."""
        return BrokerUrl.parse(self.mqtt_public_url or self.mqtt_url).public

    @property
    def issuer(self) -> str:
        """The server's identity: its public HTTPS base URL (RFC 8414 ``issuer``)."""
        if self.public_https_url:
            return self.public_https_url.rstrip("/")
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{_url_host(self.host)}{port}"

    @property
    def plain_base_url(self) -> str:
        if self.public_http_url:
            return self.public_http_url.rstrip("/")
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{_url_host(self.host)}{port}"

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply non-``None`` overrides (from CLI flags)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in clean:
            clean["data_dir"] = Path(clean["data_dir"])
        return replace(self, **clean)


def _url_host(host: str) -> str:
    # Listening on a wildcard address says nothing about the name clients use.
    if host in ("0.0.0.0", "::", "127.0.0.1"):  # noqa: S104 - comparison, not a bind
        return "localhost"
    return f"[{host}]" if ":" in host else host


_INT_FIELDS = {
    "https_port",
    "http_port",
    "first_token_ttl",
    "message_ttl",
    "max_message_size",
    "replay_window",
    "device_key_overlap",
    "server_key_refresh",
    "login_expires_in",
    "login_interval",
    "login_access_token_ttl",
    "login_refresh_token_ttl",
    "login_refresh_max_lifetime",
    "login_refresh_reuse_interval",
    "login_start_per_minute",
    "login_attempts_per_minute",
    "login_session_max_failures",
    "login_scram_iterations",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "mqtt_session_expiry",
    "workers",
}
_BOOL_FIELDS: set[str] = set()
#: Variables that no longer do anything, and what replaced them.
_RETIRED = {
    "HATCHWAY_LOGIN_NUMBER_MATCHING": (
        "anti-phishing is now chosen per client: "
        "hatchway clients add ID --anti-phishing confirm-code|phone-number|none"
    ),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def settings_from_env(environ: dict[str, str] | None = None) -> Settings:
    """Read ``HATCHWAY_<FIELD>`` variables; bad values fail loudly, naming the variable."""
    env = os.environ if environ is None else environ
    for key, instead in _RETIRED.items():
        if env.get(key):
            logging.getLogger("hatchway.config").warning("%s is ignored: %s", key, instead)
    values: dict[str, Any] = {}
    for name in Settings.__dataclass_fields__:
        key = f"HATCHWAY_{name.upper()}"
        raw = env.get(key)
        if raw is None or raw == "":
            continue
        if name in _INT_FIELDS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigurationError(f"{key} must be an integer, got {raw!r}") from None
        elif name in _BOOL_FIELDS:
            if raw.lower() not in _TRUE | _FALSE:
                raise ConfigurationError(f"{key} must be true or false, got {raw!r}")
            values[name] = raw.lower() in _TRUE
        elif name == "data_dir":
            values[name] = Path(raw).expanduser()
        else:
            values[name] = raw
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    for port_name in ("https_port", "http_port"):
        port = getattr(settings, port_name)
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"{port_name} must be between 0 and 65535, got {port}")
    if not 0 < settings.first_token_ttl <= 300:
        raise ConfigurationError("first_token_ttl must be between 1 and 300 seconds")
    if not 1024 <= settings.max_message_size <= 16 * 1024 * 1024:
        raise ConfigurationError("max_message_size must be between 1 KiB and 16 MiB")
    if not 8 <= settings.replay_window <= 4096:
        raise ConfigurationError("replay_window must be between 8 and 4096")
    if not 0 <= settings.device_key_overlap <= 365 * 86400:
        raise ConfigurationError("device_key_overlap must be between 0 seconds and 365 days")
    if not 1 <= settings.server_key_refresh <= 3600:
        raise ConfigurationError("server_key_refresh must be between 1 and 3600 seconds")
    # Devices refuse replies living longer than 600 s (their OpenPolicy.max_lifetime).
    if not 10 <= settings.message_ttl <= 600:
        raise ConfigurationError("message_ttl must be between 10 and 600 seconds")
    _validate_trusted_proxies(settings.trusted_proxies)
    if not 1 <= settings.header_timeout <= 300:
        raise ConfigurationError("header_timeout must be between 1 and 300 seconds")
    if not 1 <= settings.body_timeout <= 600:
        raise ConfigurationError("body_timeout must be between 1 and 600 seconds")
    if not 1 <= settings.max_connections <= 100_000:
        raise ConfigurationError("max_connections must be between 1 and 100000")
    if not 1 <= settings.workers <= 64:
        raise ConfigurationError("workers must be between 1 and 64")
    if settings.workers > 1 and settings.http_port == 0:
        # Port 0 would give every worker its own random port, not one shared port.
        raise ConfigurationError("workers > 1 needs a fixed http_port, not 0")
    if settings.redis_url and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigurationError("HATCHWAY_REDIS_URL must be a redis://, rediss:// or unix:// URL")
    if not 1 <= len(settings.redis_prefix) <= 64:
        raise ConfigurationError("HATCHWAY_REDIS_PREFIX must be 1 to 64 characters")
    _validate_mqtt(settings)
    if not 1 <= settings.login_expires_in <= 3600:
        raise ConfigurationError("login_expires_in must be between 1 and 3600 seconds")
    if not 1 <= settings.login_interval <= 60:
        raise ConfigurationError("login_interval must be between 1 and 60 seconds")
    if not 10 <= settings.login_access_token_ttl <= 3600:
        raise ConfigurationError("login_access_token_ttl must be between 10 and 3600 seconds")
    if settings.login_refresh_token_ttl < 60:
        raise ConfigurationError("login_refresh_token_ttl must be at least 60 seconds")
    if settings.login_refresh_max_lifetime < 60:
        raise ConfigurationError("login_refresh_max_lifetime must be at least 60 seconds")
    if not 0 <= settings.login_refresh_reuse_interval <= 60:
        raise ConfigurationError("login_refresh_reuse_interval must be between 0 and 60 seconds")
    if settings.login_start_per_minute < 1 or settings.login_attempts_per_minute < 1:
        raise ConfigurationError("login rate limits must be positive")
    if not 1 <= settings.login_session_max_failures <= 100:
        raise ConfigurationError("login_session_max_failures must be between 1 and 100")
    if not 4096 <= settings.login_scram_iterations <= 10_000_000:
        raise ConfigurationError("login_scram_iterations must be between 4096 and 10000000")


def _validate_trusted_proxies(value: str) -> None:
    """Only named proxy addresses or networks: trusting every peer ("*") would let any
    client write its own address into X-Forwarded-For and pick its rate-limit key and
    the "from …" line of the approval page."""
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"HATCHWAY_TRUSTED_PROXIES: {entry!r} is not an IP address or network "
                "(list your proxies explicitly; '*' is not accepted)"
            ) from None


def _validate_mqtt(settings: Settings) -> None:
    """Checked even while MQTT is off, so a typo fails at start, not at first use."""
    try:
        check_prefix(settings.mqtt_topic_prefix)
        check_share_group(settings.mqtt_share_group)
        for name in ("mqtt_url", "mqtt_public_url"):
            value = getattr(settings, name)
            if value:
                BrokerUrl.parse(value)
        if settings.mqtt_public_url and BrokerUrl.parse(settings.mqtt_public_url).password:
            raise ValueError("HATCHWAY_MQTT_PUBLIC_URL is given to devices: no password in it")
        if settings.mqtt_url:
            user = BrokerUrl.parse(settings.mqtt_url).username
            if user is not None:
                check_server_user(user)
        if settings.mqtt_ca_file and not Path(settings.mqtt_ca_file).is_file():
            raise ValueError(f"HATCHWAY_MQTT_CA_FILE {settings.mqtt_ca_file!r} is not a file")
        if settings.mqtt_client_id and not 1 <= len(settings.mqtt_client_id) <= 128:
            raise ValueError("HATCHWAY_MQTT_CLIENT_ID is 1 to 128 characters")
        if not 0 <= settings.mqtt_session_expiry <= 7 * 24 * 3600:
            raise ValueError("HATCHWAY_MQTT_SESSION_EXPIRY is 0 to 604800 seconds")
    except ValueError as exc:
        raise ConfigurationError(f"MQTT settings: {exc}") from None
