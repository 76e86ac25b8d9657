"""Optional drivers, imported only when a setting asks for them.

The plain install (``pip install hatchway``) must serve on the embedded defaults,
so nothing imports a driver that lives in an extra (psycopg for PostgreSQL,
pyscard for PC/SC) until it is used. When it is missing, the caller gets one
:class:`~hatchway.errors.ConfigurationError` naming the extra to install, which
the CLI prints as one line instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hatchway.errors import ConfigurationError


def import_optional(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise a one-line ``ConfigurationError`` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        missing = isinstance(exc, ModuleNotFoundError) and exc.name in (module, top)
        # An installed but broken driver (e.g. psycopg without libpq) says why.
        why = "is not installed" if missing else f"cannot be imported ({exc})"
        raise ConfigurationError(
            f"{purpose} needs {top}, which {why}: pip install 'hatchway[{extra}]'"
        ) from None


def require_psycopg() -> ModuleType:
    """psycopg 3, for the PostgreSQL store and bus."""
    return import_optional("psycopg", extra="postgres", purpose="a PostgreSQL database URL")


__all__ = ["import_optional", "require_psycopg"]
