"""``hatchway serve``: both listeners on the embedded defaults, or as configured."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from hatchway.cli.common import DatabaseOption, DataDirOption, load_settings
from hatchway.cli.output import errors_reported
from hatchway.config import validate


def serve(
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to bind [env: HATCHWAY_HOST; default 127.0.0.1]", show_default=False
        ),
    ] = None,
    https_port: Annotated[
        int | None,
        typer.Option(
            help="HTTPS port [env: HATCHWAY_HTTPS_PORT; default 8443]", show_default=False
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="Plain message port [env: HATCHWAY_HTTP_PORT; default 8080]", show_default=False
        ),
    ] = None,
    public_https_url: Annotated[
        str | None,
        typer.Option(help="Public HTTPS base URL, when behind a proxy", show_default=False),
    ] = None,
    public_http_url: Annotated[
        str | None,
        typer.Option(help="Public plain base URL, when behind a proxy", show_default=False),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error")] = None,
) -> None:
    """Run the HTTPS listener (enrolment, pages, API) and the plain message listener."""
    from hatchway.server.run import serve as run

    with errors_reported(False):
        settings = load_settings(
            data_dir,
            database_url,
            host=host,
            https_port=https_port,
            http_port=http_port,
            public_https_url=public_https_url,
            public_http_url=public_http_url,
            log_level=log_level,
        )
        validate(settings)
        asyncio.run(run(settings))


__all__ = ["serve"]
