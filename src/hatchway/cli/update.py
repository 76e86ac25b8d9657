"""``hatchway device update``: the device side of a firmware update (issue 9, docs/firmware.md).

Finishes an update in progress (a download cut short, an image booted but not yet
confirmed), else polls (or, over MQTT, also waits ``--wait`` seconds for a push) for
an offer and carries it through: download with a progress bar on a terminal (plain
lines when piped), install through ``--install-cmd``, health check, confirm or roll
back, and report each step to the server. Exit 0 when confirmed or when there is
nothing to do; 1 with a one-line reason when the offer is refused, the image rolled
back or the download interrupted (run again to resume); 2 for bad options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hatchway.cli.common import JsonOption
from hatchway.cli.device import BrokerOption, StateOption, TransportOption, _load_device
from hatchway.cli.output import (
    console,
    emit,
    err_console,
    errors_reported,
    print_json_safe,
    shown,
)


def update(
    state: StateOption,
    install_cmd: Annotated[
        str,
        typer.Option(
            "--install-cmd",
            help="Program run (no shell) as `CMD PHASE` for PHASE install, boot, confirm, "
            "rollback (and health without --health-cmd); image and version in HATCHWAY_FW_* "
            "variables (docs/firmware.md). Exit 0 means done.",
        ),
    ],
    health_cmd: Annotated[
        str | None,
        typer.Option("--health-cmd", help="Program whose exit 0 says the new image is healthy."),
    ] = None,
    step_timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds each installer step may take.")
    ] = 300.0,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0.0, help="With MQTT: seconds to wait for a pushed offer."),
    ] = 0.0,
    transport: TransportOption = "http",
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Install a firmware update: download, verify, install to the inactive slot, confirm."""
    from hatchway.device.firmware import CommandInstaller, update_once

    with errors_reported(as_json):
        installer = CommandInstaller(install_cmd, health_cmd, timeout=step_timeout)
        with _load_device(state, transport, broker) as device, _progress(as_json) as progress:
            result = update_once(device, installer, wait=wait, on_progress=progress)
        out: dict[str, Any] = {
            "release": result.release,
            "state": None if result.state is None else result.state.value,
            "reason": result.reason,
            "version": result.version,
        }
        if result.ok:
            emit(as_json, out, lambda: console.print(_sentence(out), highlight=False))
            return
        if as_json:
            sys.stdout.write(_json({**out, "error": _sentence(out)}) + "\n")
        else:
            err_console.print(f"[bold red]error:[/] {shown(_sentence(out))}", highlight=False)
        raise typer.Exit(1)


def listen_installer(
    device: Any, install_cmd: str | None, health_cmd: str | None, as_json: bool
) -> Any:
    """The listener's firmware hook: ``update_once`` on the offer, its outcome printed."""
    if install_cmd is None:
        return None
    from hatchway.device.firmware import CommandInstaller, DownloadInterrupted, update_once

    installer = CommandInstaller(install_cmd, health_cmd)

    def run() -> None:
        try:
            result = update_once(device, installer)
        except DownloadInterrupted as exc:  # resumed with the next offer or `device update`
            line: dict[str, Any] = {"firmware": {"error": str(exc)}}
        else:
            state = None if result.state is None else result.state.value
            line = {"firmware": {"release": result.release, "state": state,
                                 "reason": result.reason, "version": result.version}}  # fmt: skip
        emit(as_json, line, lambda: print_json_safe(line))
        sys.stdout.flush()

    return run


def _sentence(out: dict[str, Any]) -> str:
    release, state, reason = out["release"], out["state"], out["reason"]
    if state is None:
        return "no firmware update offered"
    if state == "confirmed":
        return f"firmware {release} ({out['version']}) installed and confirmed"
    return f"firmware {release} {state.replace('_', ' ')}: {reason}"


def _json(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value, sort_keys=True)


@contextmanager
def _progress(as_json: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich bar on a terminal, a line per 10% when piped, nothing with --json."""
    if as_json:
        yield None
        return
    if not console.is_terminal:
        shown_decile = [-1]

        def line(done: int, total: int) -> None:
            decile = done * 10 // total
            if decile > shown_decile[0]:
                shown_decile[0] = decile
                console.print(f"downloading: {done * 100 // total}% ({done}/{total} chunks)")
                sys.stdout.flush()

        yield line
        return
    columns = (
        TextColumn("downloading"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("firmware", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
