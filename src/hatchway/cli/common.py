"""Options shared by commands that act on the server's data dir (operator commands)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hatchway.config import Settings, settings_from_env

if TYPE_CHECKING:
    from hatchway.server.context import ServerContext

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Server data dir [env: HATCHWAY_DATA_DIR]", show_default=False),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="SQLAlchemy URL [env: HATCHWAY_DATABASE_URL]", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON object.")]


@contextmanager
def operator_context(data_dir: Path | None, database_url: str | None) -> Iterator[ServerContext]:
    """The server's context, opened on its data dir for one operator command, then closed."""
    from hatchway.server.context import ServerContext

    ctx = ServerContext.create(load_settings(data_dir, database_url))
    try:
        yield ctx
    finally:
        ctx.close()


def load_settings(
    data_dir: Path | None = None, database_url: str | None = None, **more: object
) -> Settings:
    return settings_from_env().with_overrides(data_dir=data_dir, database_url=database_url, **more)
