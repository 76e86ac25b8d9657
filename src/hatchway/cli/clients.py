"""``hatchway clients …``: the OAuth clients allowed to start a login (operator).

Issue 8 §1. A client is registered with its display name (what the phone's
approval page shows), the scopes it may get, its anti-phishing mode and,
optionally, its own token lifetimes. ``--confidential`` (or ``--auth-method``)
registers a confidential client, e.g. a resource server that introspects
tokens; its secret is generated here, printed once, and stored only as a hash.
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption
from hatchway.cli.output import console, emit, err_console, errors_reported, shown
from hatchway.clients import AntiPhishing, AuthMethod

if TYPE_CHECKING:
    from hatchway.clients import ClientRecord
    from hatchway.store import Store

app = typer.Typer(help="Manage the OAuth clients allowed to sign in.", no_args_is_help=True)

ClientIdArg = Annotated[str, typer.Argument(help="The client_id, e.g. living-room-tv.")]


def _store(data_dir: Path | None, database_url: str | None) -> Store:
    from hatchway.cli.users import _store as open_store
    from hatchway.flows.clients import ensure_default_clients

    store = open_store(data_dir, database_url)
    try:
        # The same first-run registration as the server's, so `clients list`
        # before the first `serve` already shows hatchway-cli.
        ensure_default_clients(store, now=time.time())
    except BaseException:
        store.close()
        raise
    return store


def _human(client: ClientRecord) -> None:
    state = "enabled" if client.enabled else "disabled"
    console.print(
        f"[bold]{shown(client.client_id)}[/] “{shown(client.name)}” ({state}, "
        f"{client.client_type}, {client.token_endpoint_auth_method})"
    )
    console.print(f"  scopes: {shown(' '.join(client.scopes)) or '(none)'}")
    console.print(f"  anti-phishing: {client.anti_phishing}")
    ttl = [
        f"access {client.access_ttl} s" if client.access_ttl else "access: server default",
        f"refresh {client.refresh_ttl} s" if client.refresh_ttl else "refresh: server default",
    ]
    console.print("  lifetimes: " + ", ".join(ttl))


def _read_jwks(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError("--jwks must hold a JWK set object")
    return value


@app.command()
def add(
    client_id: ClientIdArg,
    name: Annotated[str, typer.Option("--name", help="Shown on the approval page.")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope this client may get (repeat for more)."),
    ] = None,
    anti_phishing: Annotated[
        AntiPhishing,
        typer.Option("--anti-phishing", help="confirm-code (default), phone-number, none (labs)."),
    ] = AntiPhishing.CONFIRM_CODE,
    access_ttl: Annotated[
        int | None, typer.Option("--access-ttl", help="Access token lifetime, seconds.")
    ] = None,
    refresh_ttl: Annotated[
        int | None, typer.Option("--refresh-ttl", help="Refresh token lifetime, seconds.")
    ] = None,
    confidential: Annotated[
        bool,
        typer.Option("--confidential", help="A confidential client (client_secret_basic)."),
    ] = False,
    auth_method: Annotated[
        AuthMethod | None,
        typer.Option("--auth-method", help="Token endpoint auth method [default: none]."),
    ] = None,
    jwks: Annotated[
        Path | None,
        typer.Option("--jwks", help="JWK set file with the public keys, for private_key_jwt."),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a client. A generated client secret is printed once, never stored."""
    from hatchway.clients import new_client
    from hatchway.runtime import system_random

    with errors_reported(as_json):
        method = auth_method or (
            AuthMethod.CLIENT_SECRET_BASIC if confidential else AuthMethod.NONE
        )
        if confidential and method is AuthMethod.NONE:
            raise ValueError("--confidential needs an --auth-method other than none")
        if anti_phishing is AntiPhishing.NONE:
            err_console.print(
                "[yellow]warning:[/] anti-phishing 'none' is for labs and tests only",
                highlight=False,
            )
        record, secret = new_client(
            client_id,
            name,
            now=time.time(),
            random=system_random,
            scopes=tuple(scope or ()),
            anti_phishing=anti_phishing,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            auth_method=method,
            jwks=_read_jwks(jwks),
        )
        with closing(_store(data_dir, database_url)) as store:
            store.add_client(record)
        data = record.to_json()
        if secret is not None:
            data["client_secret"] = secret

        def human() -> None:
            console.print(f"added [bold]{shown(client_id)}[/]")
            if secret is not None:
                # soft_wrap: the secret must never be split across lines.
                console.print(
                    f"client secret (shown once, store it now): {secret}",
                    highlight=False,
                    soft_wrap=True,
                )

        emit(as_json, data, human)


@app.command("list")
def list_clients(
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List registered clients."""
    with errors_reported(as_json):
        with closing(_store(data_dir, database_url)) as store:
            clients = store.list_clients()

        def human() -> None:
            table = Table("client_id", "name", "state", "type", "anti-phishing", "scopes")
            for c in clients:
                table.add_row(
                    shown(c.client_id),
                    shown(c.name),
                    "enabled" if c.enabled else "disabled",
                    c.client_type.value,
                    c.anti_phishing.value,
                    shown(" ".join(c.scopes)),
                )
            console.print(table)

        emit(as_json, {"clients": [c.to_json() for c in clients]}, human)


def _one(client_id: str, data_dir: Path | None, database_url: str | None) -> ClientRecord:
    from hatchway.store import UnknownClient

    with closing(_store(data_dir, database_url)) as store:
        client = store.get_client(client_id)
    if client is None:
        raise UnknownClient(f"no client {client_id!r}")
    return client


@app.command()
def show(
    client_id: ClientIdArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one client (never its secret)."""
    with errors_reported(as_json):
        client = _one(client_id, data_dir, database_url)
        emit(as_json, client.to_json(), lambda: _human(client))


def _set_enabled(
    client_id: str, enabled: bool, data_dir: Path | None, database_url: str | None, as_json: bool
) -> None:
    with errors_reported(as_json):
        with closing(_store(data_dir, database_url)) as store:
            client = store.set_client_enabled(client_id, enabled, now=time.time())
        word = "enabled" if enabled else "disabled"
        emit(
            as_json, client.to_json(), lambda: console.print(f"{word} [bold]{shown(client_id)}[/]")
        )


@app.command()
def disable(
    client_id: ClientIdArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse the client everywhere (invalid_client), keeping its registration."""
    _set_enabled(client_id, False, data_dir, database_url, as_json)


@app.command()
def enable(
    client_id: ClientIdArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Accept a disabled client again."""
    _set_enabled(client_id, True, data_dir, database_url, as_json)


@app.command()
def remove(
    client_id: ClientIdArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Forget a client; its devices cannot refresh any more."""
    with errors_reported(as_json):
        with closing(_store(data_dir, database_url)) as store:
            store.remove_client(client_id)
        emit(
            as_json,
            {"client_id": client_id, "removed": True},
            lambda: console.print(f"removed [bold]{shown(client_id)}[/]"),
        )
