"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

Loaded by ``pytest_plugins = ["store_fixtures"]`` in each store test module rather
than a ``tests/store/conftest.py``: a second, package-less conftest would replace
``sys.modules["conftest"]`` and break ``from tests.services import require`` elsewhere.

PostgreSQL tests use a fresh schema per test (dropped afterwards), named after a
random per-session token, so parallel runs and reruns never see each other's
rows. Without PostgreSQL they skip locally and fail when CI=true (``require``).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from store_enrol import enrol_device

from hatchway.store import Store
from tests.services import require

PG_URL = os.environ.get(
    "HATCHWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_SESSION = secrets.token_hex(4)
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine | None]:
    """An engine on the PostgreSQL test database, or None if it is unreachable."""
    engine = create_engine(make_url(PG_URL), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any failure to connect means "not available"
        engine.dispose()
        yield None
        return
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A URL for an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.fspath(tmp_path)}/store.sqlite3"
        return
    admin: Engine | None = request.getfixturevalue("pg_admin")
    require(admin is not None, f"PostgreSQL at {make_url(PG_URL).render_as_string()}")
    assert admin is not None
    schema = f"hw_test_{_SESSION}_{next(_counter)}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


@pytest.fixture
def provisioned_device(store: Store) -> str:
    """A provisioned device whose secret hash is ``"hash-1"``."""
    store.provision_device("dev-1", "hash-1", now=1000.0)
    return "dev-1"


@pytest.fixture
def enrolled_device(store: Store, provisioned_device: str) -> str:
    """``dev-1``, enrolled: only enrolled devices may have messages accepted."""
    enrol_device(store, provisioned_device)
    return provisioned_device
