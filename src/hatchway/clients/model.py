"""The registered client record (issue 8 §1; RFC 6749 §2, RFC 7591 §2).

A client is data, not code: an operator registers it with ``hatchway clients
add`` and the store keeps it. A record says

* who the client is (``client_id``, the ``name`` the approval page shows);
* whether it may be used at all (``enabled``) and which scopes it may get;
* its anti-phishing mode (:class:`AntiPhishing`, the one place the modes are
  named; docs/login.md tabulates each against the RFC 10027 attacks);
* its own token lifetimes, when they differ from the server's defaults;
* its type (RFC 6749 §2.1) and token endpoint authentication method (the
  RFC 7591 §2 / RFC 8414 names). A *public* client authenticates with ``none``.
  A *confidential* one uses a client secret (``client_secret_basic`` or
  ``client_secret_post``), or ``private_key_jwt`` (RFC 7523 §2.2) with the
  public keys in ``jwks``.

Client secrets are 256 random bits drawn here and shown to the operator once.
The store keeps only their SHA-256: a fast hash is enough for a secret that
has as much entropy as the hash is long (nothing for a dictionary to find),
exactly as for device codes. :meth:`ClientRecord.verify_secret` compares the
digests in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hatchway.runtime import Random

__all__ = [
    "CLI_CLIENT_ID",
    "MAX_CLIENT_ID_LENGTH",
    "MAX_CLIENT_NAME_LENGTH",
    "AntiPhishing",
    "AuthMethod",
    "ClientRecord",
    "ClientType",
    "check_client_id",
    "hash_client_secret",
    "new_client",
    "new_client_secret",
]

CLI_CLIENT_ID = "hatchway-cli"
"""The client ``hatchway login`` uses; registered when a data dir is first used."""

MAX_CLIENT_ID_LENGTH = 255
"""Equal to the store's ``MAX_ID_LENGTH`` (a test keeps them equal)."""

MAX_CLIENT_NAME_LENGTH = 80
SECRET_BYTES = 32
_SECRET_PREFIX = "sha256:"  # noqa: S105 - a hash label, not a secret
# RFC 6749 Appendix A.1 allows any visible ASCII (VSCHAR) and space; we also
# refuse the space and a leading "-", so an id can never read as a CLI option
# or be split by a shell, and the approval page never shows blank-padded ids.
_CLIENT_ID = re.compile(r"[!-~]+")
ACCESS_TTL_RANGE = (10, 3600)
MIN_REFRESH_TTL = 60


class AntiPhishing(StrEnum):
    """How a client's logins resist device-code phishing (RFC 10027 §4).

    * ``confirm-code`` (default): a user who arrives by
      ``verification_uri_complete`` (the QR code) must pick the ``user_code``
      the device shows among three before the password is asked for; a user
      who typed the code at ``verification_uri`` already proved they see it.
      Works with every unmodified RFC 8628 client.
    * ``phone-number``: after approval the phone shows a two-digit number and
      the device must send it as ``match_number`` (a hatchway extension), so
      only devices that can take input can use it.
    * ``none``: no extra step. For labs and tests only.
    """

    CONFIRM_CODE = "confirm-code"
    PHONE_NUMBER = "phone-number"
    NONE = "none"


class ClientType(StrEnum):
    """RFC 6749 §2.1 client types."""

    PUBLIC = "public"
    CONFIDENTIAL = "confidential"


class AuthMethod(StrEnum):
    """Token endpoint authentication methods (RFC 7591 §2, RFC 8414 §2)."""

    NONE = "none"
    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method name
    PRIVATE_KEY_JWT = "private_key_jwt"

    @property
    def uses_secret(self) -> bool:
        return self in (AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST)

    @property
    def client_type(self) -> ClientType:
        return ClientType.PUBLIC if self is AuthMethod.NONE else ClientType.CONFIDENTIAL


def check_client_id(client_id: str) -> None:
    """Refuse ids the registry will not hold: empty, too long, spaces, non-ASCII."""
    if (
        not isinstance(client_id, str)
        or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH
        or not _CLIENT_ID.fullmatch(client_id)
        or client_id.startswith("-")
    ):
        raise ValueError(
            f"client id must be 1..{MAX_CLIENT_ID_LENGTH} visible ASCII characters, "
            "without spaces, not starting with '-'"
        )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_CLIENT_NAME_LENGTH:
        raise ValueError(f"client name must be 1..{MAX_CLIENT_NAME_LENGTH} characters")
    if name != name.strip() or any(
        unicodedata.category(ch).startswith("C") or (ch.isspace() and ch != " ") for ch in name
    ):
        # The approval page shows the name as a fact: nothing invisible or
        # reordering (bidi controls are category Cf) may hide in it.
        raise ValueError("client name has surrounding spaces or control/format characters")


def new_client_secret(random: Random) -> str:
    """A fresh client secret: 256 random bits, base64url without padding."""
    raw = random(SECRET_BYTES)
    if len(raw) != SECRET_BYTES:
        raise ValueError("random source returned the wrong number of bytes")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_client_secret(secret: str) -> str:
    """The stored form of a client secret (see the module docstring)."""
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    return _SECRET_PREFIX + digest


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRecord:
    """One registered client. ``scopes`` are what it may get, and its defaults."""

    client_id: str
    name: str
    enabled: bool = True
    scopes: tuple[str, ...] = ()
    anti_phishing: AntiPhishing = AntiPhishing.CONFIRM_CODE
    access_ttl: int | None = None
    """Access token lifetime in seconds; ``None``: the server's default."""
    refresh_ttl: int | None = None
    """Refresh token lifetime in seconds; ``None``: the server's default."""
    token_endpoint_auth_method: AuthMethod = AuthMethod.NONE
    secret_hash: str | None = field(default=None, repr=False)
    """``sha256:<hex>`` of the client secret; never the secret itself."""
    jwks: dict[str, Any] | None = None
    """Public JWK set for ``private_key_jwt`` (RFC 7591 ``jwks``)."""
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def client_type(self) -> ClientType:
        return self.token_endpoint_auth_method.client_type

    @property
    def is_public(self) -> bool:
        return self.client_type is ClientType.PUBLIC

    @property
    def default_scope(self) -> str:
        """What a request that names no scope gets (RFC 6749 §3.3): all registered."""
        return " ".join(self.scopes)

    def validate(self) -> None:
        """Raise ``ValueError`` for a record that could not work as registered."""
        from hatchway.clients.scopes import check_scope_token

        check_client_id(self.client_id)
        _check_name(self.name)
        for scope in self.scopes:
            check_scope_token(scope)
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("scopes must not repeat")
        AntiPhishing(self.anti_phishing)
        method = AuthMethod(self.token_endpoint_auth_method)
        low, high = ACCESS_TTL_RANGE
        if self.access_ttl is not None and not low <= self.access_ttl <= high:
            raise ValueError(f"access token lifetime must be {low}..{high} seconds")
        if self.refresh_ttl is not None and self.refresh_ttl < MIN_REFRESH_TTL:
            raise ValueError(f"refresh token lifetime must be at least {MIN_REFRESH_TTL} seconds")
        if method.uses_secret != (self.secret_hash is not None):
            raise ValueError(f"{method} clients need a secret, and only they have one")
        if self.secret_hash is not None and not (
            self.secret_hash.startswith(_SECRET_PREFIX) and len(self.secret_hash) == 71
        ):
            raise ValueError("secret_hash must be a hash_client_secret() value")
        if (method is AuthMethod.PRIVATE_KEY_JWT) != (self.jwks is not None):
            raise ValueError("private_key_jwt clients need a JWK set, and only they have one")
        if self.jwks is not None:
            keys = self.jwks.get("keys")
            if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
                raise ValueError('jwks must be a JWK set: {"keys": [ ... ]}')
            if any(k.get("d") is not None for k in keys):
                raise ValueError("jwks must hold public keys only")

    def verify_secret(self, presented: str) -> bool:
        """Does ``presented`` match the stored secret? Constant time; False if none."""
        if self.secret_hash is None or not isinstance(presented, str):
            # Still hash: a secret-less client answers in the same time.
            hmac.compare_digest(hash_client_secret(str(presented)), _SECRET_PREFIX + "0" * 64)
            return False
        return hmac.compare_digest(hash_client_secret(presented), self.secret_hash)

    def to_json(self) -> dict[str, Any]:
        """For ``clients show --json``: everything except the secret's hash."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "enabled": self.enabled,
            "scopes": list(self.scopes),
            "anti_phishing": self.anti_phishing.value,
            "access_ttl": self.access_ttl,
            "refresh_ttl": self.refresh_ttl,
            "client_type": self.client_type.value,
            "token_endpoint_auth_method": self.token_endpoint_auth_method.value,
            "has_secret": self.secret_hash is not None,
            "jwks": self.jwks,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def new_client(
    client_id: str,
    name: str,
    *,
    now: float,
    random: Random,
    scopes: tuple[str, ...] = (),
    anti_phishing: AntiPhishing = AntiPhishing.CONFIRM_CODE,
    access_ttl: int | None = None,
    refresh_ttl: int | None = None,
    auth_method: AuthMethod = AuthMethod.NONE,
    jwks: dict[str, Any] | None = None,
) -> tuple[ClientRecord, str | None]:
    """A new enabled client, and its secret when its method uses one (shown once)."""
    secret = new_client_secret(random) if auth_method.uses_secret else None
    record = ClientRecord(
        client_id=client_id,
        name=name,
        scopes=tuple(dict.fromkeys(scopes)),
        anti_phishing=anti_phishing,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        token_endpoint_auth_method=auth_method,
        secret_hash=None if secret is None else hash_client_secret(secret),
        jwks=jwks,
        created_at=now,
        updated_at=now,
    )
    return record, secret
