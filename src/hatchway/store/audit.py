"""The audit log and the runtime switches shared by every replica.

The issue's "Controls and records": every start, approval, denial and expiry is
recorded with IP address and user agent, and an administrator can switch the
login flow off at runtime. The switch lives in the database, not in process
memory, so that one ``set_flag`` reaches every replica at its next request.

Audit rows never hold secrets: callers pass a session *reference*
(``LoginSession.reference``), never a device code, user code or password.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import Executable, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from hatchway.store._base import RepositoryBase, dump_json, load_optional_json
from hatchway.store.login_records import AuditEvent, AuditRecord
from hatchway.store.records import JsonObject
from hatchway.store.schema import MAX_ID_LENGTH, MAX_USERNAME_LENGTH, audit_log, settings

#: Longest IP address text kept (an IPv6 with zone id fits comfortably).
_MAX_IP = 64
#: User agents are attacker-chosen text; keep enough to recognise, not all of it.
MAX_USER_AGENT = 512
_MAX_FLAG_NAME = 64
MAX_FLAG_VALUE = 4096


def _clip(value: str | None, limit: int) -> str | None:
    """Clip, and replace control and format characters with U+FFFD: these fields come
    from the network, and a terminal escape in a user agent must not reach whoever
    reads the audit log in a terminal."""
    if value is None:
        return None
    return "".join(
        "\ufffd" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in value[:limit]
    )


def _upsert_flag(dialect: str, name: str, value: str, now: float) -> Executable:
    """INSERT ... ON CONFLICT DO UPDATE: one atomic statement on either engine."""
    values = {"name": name, "value": value, "updated_at": now}
    if dialect == "postgresql":
        pg = postgresql.insert(settings).values(**values)
        return pg.on_conflict_do_update(
            index_elements=[settings.c.name],
            set_={"value": pg.excluded.value, "updated_at": pg.excluded.updated_at},
        )
    lite = sqlite.insert(settings).values(**values)
    return lite.on_conflict_do_update(
        index_elements=[settings.c.name],
        set_={"value": lite.excluded.value, "updated_at": lite.excluded.updated_at},
    )


def _audit_from_row(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        audit_id=row.id,
        at=row.at,
        event=AuditEvent(row.event),
        username=row.username,
        ip=row.ip,
        user_agent=row.user_agent,
        session_ref=row.session_ref,
        detail=load_optional_json(row.detail),
    )


class AuditRepository(RepositoryBase):
    """Append-only audit records and named runtime flags."""

    def audit(
        self,
        event: AuditEvent | str,
        *,
        now: float,
        username: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        session_ref: str | None = None,
        detail: JsonObject | None = None,
    ) -> int:
        """Append one record; returns its id. ``event`` must be an :class:`AuditEvent`.

        Free-text fields come from the network, so they are clipped to their
        column sizes rather than refused: an over-long user agent must not stop
        the event being recorded.
        """
        kind = AuditEvent(event)
        values = {
            "at": now,
            "event": kind.value,
            "username": _clip(username, MAX_USERNAME_LENGTH),
            "ip": _clip(ip, _MAX_IP),
            "user_agent": _clip(user_agent, MAX_USER_AGENT),
            "session_ref": _clip(session_ref, MAX_ID_LENGTH),
            "detail": None if detail is None else dump_json(detail),
        }
        with self._write() as conn:
            inserted = conn.execute(insert(audit_log).values(**values).returning(audit_log.c.id))
            return int(inserted.scalar_one())

    def list_audit(
        self, limit: int = 100, event: AuditEvent | str | None = None
    ) -> list[AuditRecord]:
        """The ``limit`` most recent records (optionally of one event), newest first."""
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(max(0, limit))
        if event is not None:
            query = query.where(audit_log.c.event == AuditEvent(event).value)
        with self._read() as conn:
            return [_audit_from_row(row) for row in conn.execute(query)]

    def get_flag(self, name: str) -> str | None:
        """The flag's value, or None if it was never set."""
        with self._read() as conn:
            value = conn.scalar(select(settings.c.value).where(settings.c.name == name))
        return None if value is None else str(value)

    def set_flag(self, name: str, value: str, *, now: float) -> None:
        """Set (or overwrite) a flag; visible to every replica once this returns."""
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_FLAG_NAME:
            raise ValueError(f"flag names are 1..{_MAX_FLAG_NAME} characters")
        if not isinstance(value, str) or len(value) > MAX_FLAG_VALUE:
            raise ValueError(f"flag values are strings of at most {MAX_FLAG_VALUE} characters")
        with self._write() as conn:
            conn.execute(_upsert_flag(conn.dialect.name, name, value, now))
