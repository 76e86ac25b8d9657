"""``hatchway users …``: accounts that can approve a cross-device login (operator).

Only a SCRAM-SHA-256 verifier is stored (RFC 5802 §3); the password is read
without echo, or from stdin with ``--password-stdin``, and never logged.
"""

from __future__ import annotations

import sys
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption, load_settings
from hatchway.cli.output import console, emit, errors_reported, shown

if TYPE_CHECKING:
    from hatchway.store import Store
    from hatchway.store.login_records import UserRecord

app = typer.Typer(help="Manage accounts for cross-device login.", no_args_is_help=True)

UsernameArg = Annotated[str, typer.Argument(help="The account name, e.g. alice.")]


def _store(data_dir: Path | None, database_url: str | None) -> Store:
    from hatchway.store import Store

    settings = load_settings(data_dir, database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Store.open(settings.resolved_database_url)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    again = typer.prompt("Repeat password", hide_input=True)
    if first != again:
        raise ValueError("the passwords differ")
    return str(first)


def _user_json(user: UserRecord) -> dict[str, object]:
    # Password back-off lives in the server's memory (flows/login/guard.py), so
    # the store has no live "locked" state to show; `unlock` resets it anyway.
    return {
        "username": user.username,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "unlocked_at": user.unlocked_at,
    }


@app.command()
def add(
    username: UsernameArg,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    iterations: Annotated[
        int | None,
        typer.Option(
            help="PBKDF2 iterations for the verifier [default: HATCHWAY_LOGIN_SCRAM_ITERATIONS]",
            min=4096,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an account; stores a SCRAM verifier, never the password."""
    from hatchway.flows.login.common import SCRAM_ITERATIONS_FLAG
    from hatchway.login.scram import make_verifier
    from hatchway.runtime import system_random
    from hatchway.store.users import check_username

    with errors_reported(as_json):
        check_username(username)
        password = _read_password(password_stdin)
        rounds = iterations or load_settings(data_dir, database_url).login_scram_iterations
        verifier = make_verifier(password, random=system_random, iterations=rounds)
        with closing(_store(data_dir, database_url)) as store:
            _refuse_split_iterations(store, rounds, given=iterations is not None)
            user = store.add_user(username, verifier, now=time.time())
            # Decoy verifiers for unknown names copy this count, so the ``i=`` in
            # server-first does not tell real accounts from made-up ones.
            store.set_flag(SCRAM_ITERATIONS_FLAG, str(rounds), now=time.time())
        emit(
            as_json,
            _user_json(user),
            lambda: console.print(f"added [bold]{shown(username)}[/]"),
        )


def _refuse_split_iterations(store: Store, rounds: int, *, given: bool) -> None:
    """Every account shares one PBKDF2 count, or ``i=`` in SCRAM tells real names apart.

    Decoys for unknown names copy the real accounts' counts (flows/login/approval.py),
    so one account at another count would stand out among all the others. A
    count can only change for everyone at once: SCRAM never shows the server a
    password, so existing verifiers cannot be rehashed in place (docs/login.md).
    """
    existing = sorted({u.scram_verifier.iterations for u in store.list_users()})
    if existing and rounds not in existing:
        source = "--iterations" if given else "HATCHWAY_LOGIN_SCRAM_ITERATIONS"
        raise ValueError(
            f"{source} {rounds} differs from the PBKDF2 count existing accounts use "
            f"({', '.join(map(str, existing))}); one account at another count would let "
            f"anyone tell real names from unknown ones. Use --iterations {existing[-1]}."
        )


@app.command("list")
def list_users(
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List accounts with their state."""
    with errors_reported(as_json):
        with closing(_store(data_dir, database_url)) as store:
            users = store.list_users()
        rows = [_user_json(u) for u in users]

        def human() -> None:
            table = Table("user", "state")
            for row in rows:
                state = "disabled" if row["disabled"] else "active"
                table.add_row(shown(str(row["username"])), state)
            console.print(table)

        emit(as_json, {"users": rows}, human)


def _change(
    username: str, what: str, data_dir: Path | None, database_url: str | None, as_json: bool
) -> None:
    with errors_reported(as_json):
        store = _store(data_dir, database_url)
        now = time.time()
        try:
            if what == "disable":
                user = store.set_user_disabled(username, True, now=now)
                # A disabled account keeps no signed-in devices.
                store.revoke_user_sessions(username, now=now)
            elif what == "enable":
                user = store.set_user_disabled(username, False, now=now)
            else:
                user = store.unlock_user(username, now=now)
        finally:
            store.close()
        emit(
            as_json,
            _user_json(user),
            lambda: console.print(f"{what}d [bold]{shown(username)}[/]"),
        )


@app.command()
def disable(
    username: UsernameArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Disable an account and revoke its sessions."""
    _change(username, "disable", data_dir, database_url, as_json)


@app.command()
def enable(
    username: UsernameArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-enable a disabled account."""
    _change(username, "enable", data_dir, database_url, as_json)


@app.command()
def unlock(
    username: UsernameArg,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Clear password back-off and lockout on every replica (at its next attempt)."""
    _change(username, "unlock", data_dir, database_url, as_json)
