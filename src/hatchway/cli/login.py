"""``hatchway login``, ``whoami``, ``logout`` and the operator's ``login-flow`` switch.

The device side of US 9,635,022 B2: the CLI sends the username only, shows a QR
code (segno) with ``verification_uri_complete`` plus the code and URL as text,
waits by push with a spinner, asks for the match number if the server wants
it, and stores the tokens in a 0600 file. With ``--json`` it prints one JSON
object per line: ``{"event": "started", ...}`` at once (so a script can hand
the link to a phone), then the result.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption, load_settings
from hatchway.cli.output import console, emit, errors_reported, fail, shown

if TYPE_CHECKING:
    from hatchway.server.process import ServerProcess

flow_app = typer.Typer(help="Turn cross-device login on or off (all replicas).")

CaOption = Annotated[
    Path | None,
    typer.Option(
        "--ca",
        help="CA certificate of the server's TLS certificate. "
        "Default: HATCHWAY_CA_FILE, else the local data dir's ca.pem.",
    ),
]
TokensOption = Annotated[
    Path | None,
    typer.Option("--tokens", help="Token file (0600) [env: HATCHWAY_TOKENS_FILE]"),
]


def _tokens_path(explicit: Path | None) -> Path:
    if explicit:
        return explicit
    if env := os.environ.get("HATCHWAY_TOKENS_FILE"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hatchway" / "login.json"


def _http(ca: Path | None) -> httpx.Client:
    from hatchway.cli.device import _ca_file

    ca_file = _ca_file(ca)
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    )
    return httpx.Client(verify=verify, timeout=40.0)


def _line(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def _show_qr(url: str) -> None:
    import segno

    qr = segno.make(url, error="m")
    qr.terminal(out=sys.stderr if not sys.stdout.isatty() else sys.stdout, compact=True)


def login(
    username: Annotated[str, typer.Option("--username", help="The account to sign in as.")],
    server: Annotated[str, typer.Option("--server", help="e.g. https://localhost:8443")],
    device_name: Annotated[
        str, typer.Option("--device-name", help="Shown on the phone, e.g. 'Living-room TV'.")
    ] = "hatchway CLI",
    client_id: Annotated[str, typer.Option("--client-id")] = "hatchway-cli",
    scope: Annotated[str, typer.Option("--scope")] = "",
    poll: Annotated[
        bool, typer.Option("--poll", help="Poll the token endpoint instead of push.")
    ] = False,
    ca: CaOption = None,
    tokens: TokensOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object per line: 'started' with the link at once, "
            "'match_number_required' when asked, then 'signed_in' (or an error).",
        ),
    ] = False,
) -> None:
    """Sign this device in: username here, password on your phone.

    With --json it prints one JSON object per line as the flow progresses, so a
    script can hand the link to a phone before anyone approves."""
    from hatchway.login.device_client import DeviceLoginClient, LoginFailed

    with errors_reported(as_json):
        client = DeviceLoginClient(server, http=_http(ca), client_id=client_id)
        try:
            started = client.start(username, device_name=device_name, scope=scope)
        except LoginFailed as exc:
            fail(as_json, str(exc))
        if as_json:
            _line(
                {
                    "event": "started",
                    "user_code": started.user_code,
                    "verification_uri": started.verification_uri,
                    "verification_uri_complete": started.verification_uri_complete,
                    "expires_in": started.expires_in,
                }
            )
        else:
            _show_qr(started.verification_uri_complete)
            console.print(
                f"Scan the code, or open [bold]{shown(started.verification_uri)}[/] "
                f"and enter [bold]{shown(started.user_code)}[/]",
                highlight=False,
            )

        def ask(left: int | None) -> str:
            if as_json:
                _line({"event": "match_number_required", "attempts_left": left})
                return sys.stdin.readline().strip()
            return str(typer.prompt("Enter the number shown on your phone"))

        try:
            if as_json:
                result = client.complete(started, push=not poll, ask_match_number=ask)
            else:
                with console.status("waiting for approval on your phone…", spinner="dots"):
                    result = client.complete(started, push=not poll, ask_match_number=ask)
        except LoginFailed as exc:
            fail(
                as_json,
                {
                    "access_denied": "the request was denied",
                    "expired_token": "the code expired before anyone approved it",
                }.get(exc.error, str(exc)),
            )
        finally:
            client.http.close()
        path = _tokens_path(tokens)
        result.save(path)
        emit(
            as_json,
            {"event": "signed_in", "username": username, "tokens": str(path)},
            lambda: console.print(
                f"[bold green]signed in as {shown(username)}[/]", highlight=False
            ),
        )


def whoami(
    ca: CaOption = None,
    tokens: TokensOption = None,
    as_json: JsonOption = False,
) -> None:
    """Call the protected endpoint with the stored session; refresh when expired."""
    from hatchway.login.device_client import DeviceLoginClient, LoginFailed, Tokens

    with errors_reported(as_json):
        path = _tokens_path(tokens)
        if not path.exists():
            fail(as_json, f"not signed in (no {path}); run hatchway login")
        current = Tokens.load(path)
        client = DeviceLoginClient(current.server, http=_http(ca), client_id=current.client_id)
        try:
            refreshed = False
            if current.expires_at - 5 <= time.time():
                current = client.refresh(current)
                current.save(path)
                refreshed = True
            status, body = client.whoami(current)
            if status == 401 and not refreshed:
                current = client.refresh(current)
                current.save(path)
                refreshed = True
                status, body = client.whoami(current)
        except LoginFailed as exc:
            fail(as_json, f"session ended ({exc.error}); run hatchway login again")
        finally:
            client.http.close()
        if status != 200:
            fail(as_json, f"the server refused the session ({body.get('error')})")
        body["refreshed"] = refreshed
        emit(
            as_json,
            body,
            lambda: console.print(
                f"signed in as [bold]{shown(str(body['username']))}[/]", highlight=False
            ),
        )


def logout(
    ca: CaOption = None,
    tokens: TokensOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign this device out: revoke its session at the server, then delete the token file."""
    from hatchway.login.device_client import DeviceLoginClient, LoginFailed, Tokens

    with errors_reported(as_json):
        path = _tokens_path(tokens)
        if not path.exists():
            fail(as_json, f"not signed in (no {path})")
        current = Tokens.load(path)
        client = DeviceLoginClient(current.server, http=_http(ca), client_id=current.client_id)
        try:
            client.revoke(current)
        except LoginFailed as exc:
            # Keep the file: the session is still live at the server, and the
            # refresh token in it is what a retry needs to end it.
            fail(as_json, f"the server did not revoke the session ({exc.error}); {path} kept")
        finally:
            client.http.close()
        path.unlink()
        emit(
            as_json,
            {"event": "signed_out", "server": current.server, "tokens": str(path)},
            lambda: console.print("signed out; the session is revoked", highlight=False),
        )


def _flow_switch(
    enabled: bool, data_dir: Path | None, database_url: str | None, as_json: bool
) -> None:
    from hatchway.server.context import ServerContext

    with errors_reported(as_json):
        ctx = ServerContext.create(load_settings(data_dir, database_url))
        try:
            ctx.login.set_enabled(enabled)
        finally:
            ctx.close()
        word = "enabled" if enabled else "disabled"
        emit(as_json, {"login_flow": word}, lambda: console.print(f"cross-device login {word}"))


@flow_app.command("enable")
def flow_enable(
    data_dir: DataDirOption = None, database_url: DatabaseOption = None, as_json: JsonOption = False
) -> None:
    """Allow new cross-device logins."""
    _flow_switch(True, data_dir, database_url, as_json)


@flow_app.command("disable")
def flow_disable(
    data_dir: DataDirOption = None, database_url: DatabaseOption = None, as_json: JsonOption = False
) -> None:
    """Refuse new cross-device logins and approvals (existing sessions keep working)."""
    _flow_switch(False, data_dir, database_url, as_json)


def login_demo_step(server: ServerProcess, say: Callable[..., None]) -> dict[str, Any]:
    """``hatchway demo``'s cross-device login: a TV signs in, a phone approves.

    The phone is the SDK's own phone-side client (SCRAM in Python), so the demo
    needs no browser; the device waits by push, exactly as ``hatchway login``.
    """
    import threading

    from hatchway.login.device_client import DeviceLoginClient
    from hatchway.login.phone import PhoneClient

    say("[bold]Cross-device login[/] (US 9,635,022 B2)")
    password = secrets.token_urlsafe(12)
    subprocess.run(
        [sys.executable, "-m", "hatchway", "users", "add", "alice", "--password-stdin"],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        env=server.env(),
    )
    say("  1. operator added alice (only a SCRAM verifier is stored)")
    register = ["clients", "add", "living-room-tv", "--name", "Living-room TV app"]
    subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "hatchway", *register, "--scope", "profile"],
        check=True,
        capture_output=True,
        env=server.env(),
    )
    say("     and registered the TV app as a client (default anti-phishing: confirm-code)")
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=context, timeout=40) as http:
        device = DeviceLoginClient(server.https_url, http=http, client_id="living-room-tv")
        started = device.start("alice", device_name="Living-room TV")
        say(f"  2. the TV sent only the username; it shows {started.user_code} and a QR code")
        phone = PhoneClient(http)
        request = phone.open(started.verification_uri_complete)
        say(f"  3. the phone opened the link: “{shown(request.text)}”")
        if request.choices:
            say(
                f"     it offers {', '.join(shown(c) for c in request.choices)}; the person "
                f"picks {started.user_code}, the code on the TV"
            )
        approved_at: list[float] = []
        match_numbers: list[str | None] = []

        def approve() -> None:
            time.sleep(0.3)
            approved_at.append(time.perf_counter())
            approval = phone.approve(
                request, password, origin=server.https_url, shown_code=started.user_code
            )
            match_numbers.append(approval.match_number)

        def read_number(_left: int | None) -> str:
            # Only for a client registered with --anti-phishing phone-number: the
            # person reads the phone's number and types it on the TV.
            approver.join()
            number = match_numbers[0] if match_numbers else None
            if number is None:
                raise RuntimeError("the phone showed no number to match")
            say(f"     the phone shows {number}; the TV user types it in")
            return number

        approver = threading.Thread(target=approve)
        approver.start()
        tokens = device.complete(started, ask_match_number=read_number)
        notified = time.perf_counter()
        approver.join()
        say("  4. the phone proved the password with SCRAM-SHA-256 bound to this session")
        status, who = device.whoami(tokens)
        if status != 200 or who.get("username") != "alice":
            raise RuntimeError("the access token was not accepted")
        latency_ms = round((notified - approved_at[0]) * 1000, 1)
        say(f"  5. the TV was told in {latency_ms} ms (push) and is signed in as alice")
        rotated = device.refresh(tokens)
        say("  6. its refresh token rotated; the old one is now refused")
    return {
        "flow": "login",
        "signed_in_as": who["username"],
        "approve_to_signed_in_ms": latency_ms,
        "refresh_rotated": rotated.refresh_token != tokens.refresh_token,
    }
