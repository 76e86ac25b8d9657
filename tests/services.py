"""Helpers for tests that need a real service or program.

Such tests may skip on a machine that lacks the service, but never when ``CI=true``:
there a missing service is a failure (the CI rule in the project brief).
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


def require(available: bool, what: str) -> None:
    """Skip when ``what`` is missing locally; fail when it is missing in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true but is not available")
    pytest.skip(f"{what} not available")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_chromium() -> None:
    require(os.path.exists(CHROMIUM), f"Chromium at {CHROMIUM}")


def require_program(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    require(path is not None, name)
    assert path is not None
    return path


def require_module(name: str, *, extra: str) -> ModuleType:
    """Import ``name``; when it is not installed, skip (fail when CI=true) naming its extra.

    For test-only packages that cannot live in the ``test`` extra, such as
    yubikey-manager, whose pyscard dependency has no Linux wheel.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        what = f"{name} (pip install -e '.[{extra}]')"
        if IN_CI:
            pytest.fail(f"{what} is required when CI=true but is not installed")
        # Called at module level, before the imports that need the package.
        pytest.skip(f"{what} not installed", allow_module_level=True)


REDIS_URL = os.environ.get("HATCHWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    """The test Redis URL; skip (fail in CI) when nothing answers there."""
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    require(port_open(parts.hostname or "127.0.0.1", parts.port or 6379), f"Redis at {REDIS_URL}")
    return REDIS_URL
