"""``hatchway groups add|remove|list``: device groups that firmware rollouts target (issue 9)."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Annotated

import typer
from rich.table import Table

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption
from hatchway.cli.fw_store import open_firmware_store
from hatchway.cli.output import console, emit, errors_reported, shown

app = typer.Typer(help="Device groups (the targets of firmware rollouts).", no_args_is_help=True)

GroupArg = Annotated[str, typer.Argument(help="Group name, e.g. pilot.")]


@app.command()
def add(
    group: GroupArg,
    devices: Annotated[list[str], typer.Argument(help="Device ids to add.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add DEVICES to GROUP (created on first use)."""
    with errors_reported(as_json):
        with closing(open_firmware_store(data_dir, database_url)) as store:
            added = store.add_to_group(group, devices, now=time.time())
            members = store.groups().get(group, [])
        emit(
            as_json,
            {"group": group, "added": added, "members": members},
            lambda: console.print(f"{shown(group)}: {added} added, {len(members)} members"),
        )


@app.command()
def remove(
    group: GroupArg,
    devices: Annotated[
        list[str] | None, typer.Argument(help="Device ids to remove (all with --all).")
    ] = None,
    remove_all: Annotated[bool, typer.Option("--all", help="Remove every member.")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove DEVICES (or, with --all, every member) from GROUP."""
    with errors_reported(as_json):
        if bool(devices) == remove_all:
            raise ValueError("name the devices to remove, or pass --all (not both)")
        with closing(open_firmware_store(data_dir, database_url)) as store:
            removed = store.remove_from_group(group, None if remove_all else devices)
        emit(
            as_json,
            {"group": group, "removed": removed},
            lambda: console.print(f"{shown(group)}: {removed} removed"),
        )


@app.command("list")
def list_groups(
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every group and its members."""
    with errors_reported(as_json):
        with closing(open_firmware_store(data_dir, database_url)) as store:
            groups = store.groups()

        def human() -> None:
            if not groups:
                console.print("no groups yet (`hatchway groups add GROUP DEVICE...`)")
                return
            table = Table("group", "devices", "members")
            for name, members in groups.items():
                table.add_row(shown(name), str(len(members)), shown(" ".join(members)))
            console.print(table)

        emit(as_json, {"groups": groups}, human)
