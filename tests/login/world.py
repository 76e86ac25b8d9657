"""A login world for in-process tests: a real ServerContext (SQLite, data dir, CA) with
an injected clock and seeded randomness, one account, alice, whose password is
``PASSWORD`` (SCRAM at 4096 iterations so tests stay fast), and one registered
client, ``tv`` (scopes ``profile`` and ``offline_access``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hatchway.clients import AntiPhishing, new_client
from hatchway.config import settings_from_env
from hatchway.login import make_verifier
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PASSWORD = "pencil"
TV_SCOPES = ("profile", "offline_access")


@contextmanager
def login_world(
    tmp_path: Path,
    clock: FrozenClock,
    *,
    anti_phishing: AntiPhishing = AntiPhishing.NONE,
    **env: str,
) -> Iterator[ServerContext]:
    """Generous per-IP limits unless ``env`` says otherwise.

    ``tv``'s anti-phishing mode is ``none`` unless asked for: most tests here
    are about other things, and the modes have their own tests.
    """
    settings = settings_from_env(
        {
            "HATCHWAY_DATA_DIR": str(tmp_path / "data"),
            "HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE": "600",
            **env,
        }
    )
    context = ServerContext.create(settings, clock=clock, random=SeededRandom())
    verifier = make_verifier(PASSWORD, random=SeededRandom(b"user"), iterations=4096)
    context.store.add_user("alice", verifier, now=0)
    tv, _ = new_client(
        "tv",
        "Living-room TV app",
        now=0,
        random=SeededRandom(b"tv"),
        scopes=TV_SCOPES,
        anti_phishing=anti_phishing,
    )
    context.store.add_client(tv)
    try:
        yield context
    finally:
        context.close()
