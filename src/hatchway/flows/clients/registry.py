"""Client identification and authentication at the OAuth endpoints.

RFC 6749 §2.3 and §5.2, with the RFC 8414 / RFC 7591 method names:

* ``none`` (public clients, every RFC 8628 device): the request names its
  ``client_id`` in the form body. Some libraries send it as HTTP Basic with an
  empty password instead; that is accepted as the same identification.
* ``client_secret_basic``: ``Authorization: Basic`` with the form-urlencoded
  id and secret (RFC 6749 §2.3.1).
* ``client_secret_post``: ``client_id`` and ``client_secret`` in the body.
* ``private_key_jwt`` (RFC 7523 §2.2) is recorded in the registry but not
  accepted by this function yet; such a client gets ``invalid_client`` here.

Unknown, disabled and wrongly authenticated clients all get the same
``invalid_client``; the real reason goes to the log only. A request that tried
to authenticate with the ``Authorization`` header gets 401 and a
``WWW-Authenticate: Basic`` challenge, every other one 400 (§5.2). A request
may use only one method (§2.3): a header *and* a body secret is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from dataclasses import dataclass, replace
from urllib.parse import unquote_plus

from hatchway.clients import CLI_CLIENT_ID, AntiPhishing, AuthMethod, ClientRecord
from hatchway.clients.model import check_client_id
from hatchway.flows.login.common import LoginRefused
from hatchway.store import ClientExists, Store

__all__ = [
    "CLI_CLIENT",
    "DEFAULTS_SEEDED_FLAG",
    "ClientCache",
    "authenticate_client",
    "ensure_default_clients",
    "parse_basic_authorization",
]

DEFAULTS_SEEDED_FLAG = "default_clients_registered"
"""Store flag: ``hatchway-cli`` was registered once; an operator may remove it for good."""

CLI_CLIENT = ClientRecord(
    client_id=CLI_CLIENT_ID,
    name="hatchway command line",
    scopes=("profile",),
    anti_phishing=AntiPhishing.CONFIRM_CODE,
)
"""What ``hatchway login`` is registered as on first run (times filled in then)."""

REALM = "hatchway"
_MAX_HEADER = 1024


def _refused(reason: str, *, header: bool) -> LoginRefused:
    return LoginRefused(
        "invalid_client",
        "client authentication failed",
        status=401 if header else 400,
        reason=reason,
        challenge=f'Basic realm="{REALM}"' if header else None,
    )


def parse_basic_authorization(value: str) -> tuple[str, str]:
    """``Authorization: Basic ...`` -> (client_id, secret), each form-urldecoded.

    Raises :class:`LoginRefused` (``invalid_client``, 401) when malformed.
    """
    scheme, _, param = value.strip().partition(" ")
    if scheme.lower() != "basic" or not param or len(value) > _MAX_HEADER:
        raise _refused("authorization header is not Basic", header=True)
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _refused("malformed Basic credentials", header=True) from None
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise _refused("Basic credentials without a colon", header=True)
    return unquote_plus(raw_id), unquote_plus(raw_secret)


def authenticate_client(
    store: Store, form: dict[str, str], authorization: str | None
) -> ClientRecord:
    """The enabled, registered client this request comes from, or ``invalid_client``."""
    header = authorization is not None and authorization.strip() != ""
    body_secret = form.get("client_secret")
    form_id = form.get("client_id") or None
    header_secret: str | None = None
    if header:
        assert authorization is not None  # noqa: S101 - narrowed by `header`
        client_id, header_secret = parse_basic_authorization(authorization)
        if body_secret is not None:
            raise LoginRefused("invalid_request", "use one client authentication method")
        if form_id is not None and form_id != client_id:
            raise _refused("client_id in the body differs from the header", header=True)
    elif form_id is None:
        raise LoginRefused("invalid_request", "missing or malformed client_id")
    else:
        client_id = form_id
    try:
        check_client_id(client_id)
    except ValueError:
        raise _refused("malformed client_id", header=header) from None
    client = store.get_client(client_id)
    if client is None or not client.enabled:
        raise _refused("unknown or disabled client", header=header)
    method = client.token_endpoint_auth_method
    if method is AuthMethod.NONE:
        if header_secret or body_secret:
            raise _refused("public client presented a secret", header=header)
        return client
    if method is AuthMethod.CLIENT_SECRET_BASIC and header and header_secret is not None:
        if client.verify_secret(header_secret):
            return client
        raise _refused("wrong client secret", header=True)
    if method is AuthMethod.CLIENT_SECRET_POST and not header and body_secret is not None:
        if client.verify_secret(body_secret):
            return client
        raise _refused("wrong client secret", header=False)
    raise _refused(f"client must authenticate with {method}", header=header)


def ensure_default_clients(store: Store, *, now: float) -> None:
    """Register ``hatchway-cli`` the first time the server uses this store.

    A store flag records that this happened, so an operator who removes or
    changes the client is not overruled at the next start. Two replicas
    starting at once may both try; the second insert is simply refused.
    """
    if store.get_flag(DEFAULTS_SEEDED_FLAG) is not None:
        return
    with contextlib.suppress(ClientExists):
        store.add_client(replace(CLI_CLIENT, created_at=now, updated_at=now))
    store.set_flag(DEFAULTS_SEEDED_FLAG, "1", now=now)


@dataclass(frozen=True, slots=True)
class _Cached:
    enabled: bool
    until: float


class ClientCache:
    """Is a client registered and enabled? Remembered for ``ttl`` seconds.

    For the token endpoint's store-free pending-poll path only, which never
    issues anything: a client the operator disables (from another process)
    may still hear ``authorization_pending`` from memory for up to ``ttl``,
    but every request that could issue or refresh tokens reads the store and
    gets ``invalid_client`` at once.
    """

    def __init__(self, store: Store, *, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def peek(self, client_id: str, now: float) -> bool | None:
        """The cached answer, or None when it must be read from the store."""
        with self._lock:
            cached = self._entries.get(client_id)
        if cached is None or cached.until <= now:
            return None
        return cached.enabled

    def remember(self, client: ClientRecord | None, client_id: str, now: float) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # bounded; the next reads repopulate it
            enabled = client is not None and client.enabled
            self._entries[client_id] = _Cached(enabled, now + self.ttl)
