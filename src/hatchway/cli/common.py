"""Options shared by commands that act on the server's data dir (operator commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hatchway.config import Settings, settings_from_env

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


def load_settings(
    data_dir: Path | None = None, database_url: str | None = None, **more: object
) -> Settings:
    return settings_from_env().with_overrides(data_dir=data_dir, database_url=database_url, **more)
