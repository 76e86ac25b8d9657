"""``hatchway serve``: both listeners on the embedded defaults, or as configured."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from hatchway.cli.common import DatabaseOption, DataDirOption, load_settings
from hatchway.cli.output import console, emit, errors_reported
from hatchway.config import Settings, validate

if TYPE_CHECKING:
    from hatchway.server.context import ServerContext


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
    workers: Annotated[
        int | None,
        typer.Option(
            help="Server processes sharing the plain message port (SO_REUSEPORT); worker 0 "
            "also runs HTTPS [env: HATCHWAY_WORKERS; default 1]",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object on stdout once both listeners are up."),
    ] = False,
) -> None:
    """Run the HTTPS listener (enrolment, pages, API) and the plain message listener.

    Logs go to stderr as one JSON line each; stdout gets the ready line (with --json)."""
    from hatchway.server.run import serve as run

    def ready(s: Settings) -> None:
        data = {
            "https": s.issuer,
            "plain": s.plain_base_url,
            "data_dir": str(s.data_dir),
            "workers": s.workers,
        }
        emit(
            as_json,
            data,
            lambda: console.print(
                f"hatchway is serving: HTTPS {s.issuer}, sealed messages {s.plain_base_url}, "
                f"data dir {s.data_dir}. Stop with Ctrl-C or SIGTERM.",
                highlight=False,
            ),
        )
        sys.stdout.flush()

    with errors_reported(as_json):
        settings = load_settings(
            data_dir,
            database_url,
            host=host,
            https_port=https_port,
            http_port=http_port,
            public_https_url=public_https_url,
            public_http_url=public_http_url,
            log_level=log_level,
            workers=workers,
        )
        validate(settings)
        if settings.workers == 1:

            def one(ctx: ServerContext) -> None:
                ready(ctx.settings)

            asyncio.run(run(settings, on_ready=one))
            return
        from hatchway.server.workers import Supervisor

        code = Supervisor(settings, settings.workers).run(lambda: ready(settings))
    if code:
        raise typer.Exit(code)


__all__ = ["serve"]
