"""``hatchway sessions …``: signed-in devices (refresh token families), operator side.

Each sign-in is one family of rotating refresh tokens (RFC 6819 §5.2.2.3);
revoking it ends the device's session at its next refresh and makes its
access token fail at ``/api/whoami`` at once.
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Annotated, Any

import typer
from rich.table import Table

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption
from hatchway.cli.output import console, emit, errors_reported, fail, shown
from hatchway.cli.users import _store

app = typer.Typer(help="List and revoke signed-in devices.", no_args_is_help=True)


@app.command("list")
def list_sessions(
    username: Annotated[str | None, typer.Option("--user", help="Only this account.")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List live sessions (one per signed-in device)."""
    with errors_reported(as_json):
        with closing(_store(data_dir, database_url)) as store:
            families = store.list_sessions(username, now=time.time())
        rows: list[dict[str, Any]] = [
            {
                "session": f.family_id,
                "username": f.username,
                "client_id": f.client_id,
                "device_name": f.device_name,
                "created_at": f.created_at,
                "last_used_at": f.last_used_at,
                # The sign-in's absolute end (HATCHWAY_LOGIN_REFRESH_MAX_LIFETIME).
                "expires_at": f.expires_at,
            }
            for f in families
        ]

        def human() -> None:
            table = Table("session", "user", "device", "signed in", "last used")
            for r in rows:
                # Device names are chosen by whoever ran ``hatchway login``:
                # escape them, or "[/]" crashes rich, "[link=…]" is obeyed and
                # a C1 control or bidi override reaches the terminal.
                table.add_row(
                    shown(str(r["session"])),
                    shown(str(r["username"])),
                    shown(str(r["device_name"])),
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(float(r["created_at"]))),
                    time.strftime("%H:%M", time.localtime(float(r["last_used_at"] or 0))),
                )
            console.print(table)

        emit(as_json, {"sessions": rows}, human)


@app.command()
def revoke(
    session: Annotated[str | None, typer.Argument(help="Session id from `sessions list`.")] = None,
    username: Annotated[
        str | None, typer.Option("--user", help="Revoke every session of this account.")
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke one session, or all of an account's with --user."""
    with errors_reported(as_json):
        if (session is None) == (username is None):
            fail(as_json, "give a session id or --user, not both", code=2)
        store = _store(data_dir, database_url)
        now = time.time()
        try:
            if session is not None:
                count = 1 if store.revoke_session_family(session, now=now) else 0
            else:
                assert username is not None  # noqa: S101 - checked above
                count = store.revoke_user_sessions(username, now=now)
            store.audit(
                "session_revoked",
                now=now,
                username=username,
                detail={"session": session, "count": count, "actor": "operator"},
            )
        finally:
            store.close()
        if count == 0:
            fail(as_json, "no such live session")
        emit(as_json, {"revoked": count}, lambda: console.print(f"revoked {count} session(s)"))
