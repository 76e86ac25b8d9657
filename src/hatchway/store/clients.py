"""Registered OAuth clients (issue 8 §1; RFC 6749 §2, RFC 7591 §2 field names).

Persists :class:`hatchway.clients.model.ClientRecord` values, which validate
themselves on construction, so a row that reaches the login flow is always a
consistent client (a public client has no secret, a ``client_secret_*`` one
has a secret hash, a ``private_key_jwt`` one has a JWK set). The secret itself
never reaches this module: only ``hash_client_secret``'s output does.

Every method is one transaction and works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from hatchway.clients.model import AntiPhishing, AuthMethod, ClientRecord, check_client_id
from hatchway.store._base import RepositoryBase, dump_json, load_optional_json
from hatchway.store.login_errors import ClientExists, UnknownClient
from hatchway.store.schema import clients


def _values(record: ClientRecord) -> dict[str, Any]:
    return {
        "client_id": record.client_id,
        "name": record.name,
        "enabled": record.enabled,
        "scopes": " ".join(record.scopes),
        "anti_phishing": record.anti_phishing.value,
        "access_ttl": record.access_ttl,
        "refresh_ttl": record.refresh_ttl,
        "client_type": record.client_type.value,
        "token_endpoint_auth_method": record.token_endpoint_auth_method.value,
        "secret_hash": record.secret_hash,
        "jwks": None if record.jwks is None else dump_json(record.jwks),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _from_row(row: Row[Any]) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        enabled=bool(row.enabled),
        scopes=tuple(row.scopes.split()),
        anti_phishing=AntiPhishing(row.anti_phishing),
        access_ttl=row.access_ttl,
        refresh_ttl=row.refresh_ttl,
        token_endpoint_auth_method=AuthMethod(row.token_endpoint_auth_method),
        secret_hash=row.secret_hash,
        jwks=load_optional_json(row.jwks),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class ClientRepository(RepositoryBase):
    """Registered clients: add, look up, list, enable/disable, update, remove."""

    def add_client(self, record: ClientRecord) -> ClientRecord:
        """Register ``record``; raises :class:`ClientExists` if its id is taken."""
        record.validate()
        try:
            with self._write() as conn:
                conn.execute(insert(clients).values(**_values(record)))
        except IntegrityError:
            raise ClientExists(record.client_id) from None
        return record

    def get_client(self, client_id: str) -> ClientRecord | None:
        """The client registered as ``client_id``, or None (also for ids it could not be)."""
        try:
            check_client_id(client_id)
        except ValueError:
            # Remote input: an id that could never be registered simply is not.
            return None
        with self._read() as conn:
            row = conn.execute(
                select(clients).where(clients.c.client_id == client_id)
            ).one_or_none()
        return None if row is None else _from_row(row)

    def list_clients(self) -> list[ClientRecord]:
        """Every registered client, by id."""
        with self._read() as conn:
            rows = conn.execute(select(clients).order_by(clients.c.client_id)).all()
        return [_from_row(row) for row in rows]

    def update_client(self, record: ClientRecord, *, now: float) -> ClientRecord:
        """Overwrite an existing client's fields (not ``created_at``); returns the new value.

        For a new secret, pass a record whose ``secret_hash`` is the new hash;
        the old secret stops working in the same transaction.
        """
        record.validate()
        values = _values(record)
        values.pop("created_at")
        values["updated_at"] = now
        with self._write() as conn:
            result = conn.execute(
                update(clients).where(clients.c.client_id == record.client_id).values(**values)
            )
            if result.rowcount != 1:
                raise UnknownClient(record.client_id)
            row = conn.execute(select(clients).where(clients.c.client_id == record.client_id)).one()
        return _from_row(row)

    def set_client_enabled(self, client_id: str, enabled: bool, *, now: float) -> ClientRecord:
        """Enable or disable a client; a disabled one gets ``invalid_client`` everywhere."""
        with self._write() as conn:
            result = conn.execute(
                update(clients)
                .where(clients.c.client_id == client_id)
                .values(enabled=bool(enabled), updated_at=now)
            )
            if result.rowcount != 1:
                raise UnknownClient(client_id)
            row = conn.execute(select(clients).where(clients.c.client_id == client_id)).one()
        return _from_row(row)

    def remove_client(self, client_id: str) -> None:
        """Forget a client. Its signed-in devices stop at their next refresh
        (the token endpoint no longer knows the client)."""
        with self._write() as conn:
            result = conn.execute(delete(clients).where(clients.c.client_id == client_id))
            if result.rowcount != 1:
                raise UnknownClient(client_id)
