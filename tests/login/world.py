"""A login world for in-process tests: a real ServerContext (SQLite, data dir, CA) with
an injected clock and seeded randomness, and one account, alice, whose password is
``PASSWORD`` (SCRAM at 4096 iterations so tests stay fast)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hatchway.config import settings_from_env
from hatchway.login import make_verifier
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PASSWORD = "pencil"


@contextmanager
def login_world(tmp_path: Path, clock: FrozenClock, **env: str) -> Iterator[ServerContext]:
    """Number matching off and generous per-IP limits unless ``env`` says otherwise."""
    settings = settings_from_env(
        {
            "HATCHWAY_DATA_DIR": str(tmp_path / "data"),
            "HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE": "600",
            "HATCHWAY_LOGIN_NUMBER_MATCHING": "false",
            **env,
        }
    )
    context = ServerContext.create(settings, clock=clock, random=SeededRandom())
    verifier = make_verifier(PASSWORD, random=SeededRandom(b"user"), iterations=4096)
    context.store.add_user("alice", verifier, now=0)
    try:
        yield context
    finally:
        context.close()
