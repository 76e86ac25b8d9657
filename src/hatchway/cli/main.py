"""The ``hatchway`` console script."""

from __future__ import annotations

import typer

from hatchway import __version__
from hatchway.cli import demo, device, serve

app = typer.Typer(
    help="hatchway: secure sessions for devices that cannot carry one alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.add_typer(device.app, name="device")


@app.command()
def version() -> None:
    """Print the hatchway version."""
    print(__version__)


def main() -> None:
    app()
