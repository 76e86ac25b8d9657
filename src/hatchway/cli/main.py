"""The ``hatchway`` console script."""

from __future__ import annotations

import typer

from hatchway import __version__
from hatchway.cli import (
    clients,
    demo,
    device,
    firmware,
    groups,
    keys,
    login,
    mqtt,
    rotate,
    se,
    serve,
    sessions,
    update,
    users,
)
from hatchway.cli.common import JsonOption
from hatchway.cli.output import emit

app = typer.Typer(
    help="hatchway: secure sessions for devices that cannot carry one alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
device.app.command("rotate-keys")(rotate.rotate_keys)
device.app.command("update")(update.update)
app.add_typer(device.app, name="device")
app.add_typer(firmware.app, name="firmware")
app.add_typer(groups.app, name="groups")
app.add_typer(se.app, name="se")
app.add_typer(mqtt.app, name="mqtt")
app.add_typer(users.app, name="users")
app.add_typer(sessions.app, name="sessions")
app.add_typer(clients.app, name="clients")
app.add_typer(keys.app, name="keys")
app.add_typer(login.flow_app, name="login-flow")
app.command("login")(login.login)
app.command("whoami")(login.whoami)
app.command("logout")(login.logout)


@app.command()
def version(as_json: JsonOption = False) -> None:
    """Print the hatchway version."""
    emit(as_json, {"version": __version__}, lambda: print(__version__))


def main() -> None:
    app()
