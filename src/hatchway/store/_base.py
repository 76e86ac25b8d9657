"""Plumbing shared by the store's repositories: transactions and JSON columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from hatchway.store.engine import WRITE_OPTION
from hatchway.store.records import JsonObject
from hatchway.store.schema import MAX_ID_LENGTH


class RepositoryBase:
    """Holds the engines; subclasses add one entity's operations each."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Same pool and listeners; only marks transactions as writers so that
        # SQLite takes its write lock at BEGIN (see hatchway.store.engine).
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for multi-query reads."""
        with self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on any exception."""
        with self._write_engine.connect() as conn, conn.begin():
            yield conn


def dump_json(value: JsonObject) -> str:
    """Serialise a JSON object for a text column (compact, stable key order)."""
    if not isinstance(value, dict):
        raise TypeError("JSON columns hold objects (dicts) only")
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def load_json(text: str) -> JsonObject:
    value: Any = json.loads(text)
    if not isinstance(value, dict):  # pragma: no cover - only dump_json writes these
        raise ValueError("stored JSON is not an object")
    return value


def load_optional_json(text: str | None) -> JsonObject | None:
    return None if text is None else load_json(text)


def check_id(name: str, value: str) -> None:
    """Refuse identifiers the schema cannot hold, identically on both engines."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} chars")
