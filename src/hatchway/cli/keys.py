"""``hatchway keys …``: the server's message keys (docs/key-rotation.md), operator side.

``rotate`` adds a new generation (signing + encryption) to the store that every
replica reads; the live older ones keep opening messages until ``--overlap`` ends.
``list`` shows each generation and whether it is current, retiring or retired.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption, load_settings
from hatchway.cli.firmware import parse_duration
from hatchway.cli.output import console, emit, errors_reported, shown

if TYPE_CHECKING:
    from hatchway.flows.keyring import ServerKeyring

app = typer.Typer(help="Rotate and list the server's message keys.", no_args_is_help=True)


@contextmanager
def _keyring(data_dir: Path | None, database_url: str | None) -> Iterator[ServerKeyring]:
    from hatchway.flows.keyring import ServerKeyring
    from hatchway.runtime import system_clock, system_random
    from hatchway.server.datadir import ensure_data_dir
    from hatchway.store import Store

    settings = load_settings(data_dir, database_url)
    identity = ensure_data_dir(settings.data_dir)
    store = Store.open(settings.resolved_database_url)
    try:
        yield ServerKeyring(store, identity, clock=system_clock, random=system_random)
    finally:
        store.close()


def _rows(keyring: ServerKeyring, now: float) -> list[dict[str, Any]]:
    current = keyring.current.generation
    rows = []
    for g in keyring.generations():
        state = "current" if g.generation == current else "retiring" if g.live(now) else "retired"
        rows.append(
            {
                "generation": g.generation,
                "state": state,
                "signing_kid": g.signing.kid,
                "encryption_kid": g.decryption.kid,
                "created_at": g.created_at,
                "retires_at": g.retires_at,
            }
        )
    return rows


def _when(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(value))


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("gen", "state", "signing kid", "encryption kid", "created", "retires")
    for r in rows:
        table.add_row(
            str(r["generation"]),
            r["state"],
            shown(r["signing_kid"]),
            shown(r["encryption_kid"]),
            _when(r["created_at"]),
            _when(r["retires_at"]),
        )
    return table


@app.command()
def rotate(
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap",
            help="How long the current keys keep working, e.g. 7d, 24h, 90m (devices "
            "switch at their next message; one still on the old keys after this re-enrols).",
        ),
    ] = "7d",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a new server key pair (signing + encryption); the old one retires after --overlap."""
    from hatchway.flows.keyring import rotate_server_keys
    from hatchway.runtime import system_random

    with errors_reported(as_json):
        seconds = parse_duration(overlap)
        now = time.time()
        with _keyring(data_dir, database_url) as keyring:
            generation = rotate_server_keys(
                keyring.store, keyring.identity, now=now, overlap=seconds, random=system_random
            )
            keyring.refresh(now)
            rows = _rows(keyring, now)
        new = next(r for r in rows if r["generation"] == generation)
        emit(
            as_json,
            {"generation": generation, "retires_at": now + seconds, "keys": rows},
            lambda: console.print(
                f"generation {generation} is current (signing {shown(new['signing_kid'])}); "
                f"the previous keys work until {_when(now + seconds)}",
                highlight=False,
            ),
        )


@app.command("list")
def list_keys(
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the server's message-key generations: current, retiring (until when), retired."""
    with errors_reported(as_json):
        now = time.time()
        with _keyring(data_dir, database_url) as keyring:
            rows = _rows(keyring, now)
        emit(as_json, {"keys": rows}, lambda: console.print(_table(rows)))
