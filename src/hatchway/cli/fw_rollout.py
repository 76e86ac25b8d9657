"""``hatchway firmware rollout|pause|resume|cancel|status VERSION`` (issue 9, "Rollouts").

VERSION names a published release; when several device classes have a release
of that version, ``--class`` picks one (a release id is accepted too). A rollout
offers the release to the enrolled devices of a group in waves
(``hatchway.firmware.rollout``), pauses itself past ``--max-failures`` and moves on
to the next wave when every device of the current one reached a final state.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import closing
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption, load_settings
from hatchway.cli.fw_publish import release_json
from hatchway.cli.fw_store import open_firmware_store
from hatchway.cli.output import console, emit, errors_reported, shown
from hatchway.config import Settings
from hatchway.firmware.rollout import FAILED, FwState, RolloutState
from hatchway.runtime import system_clock
from hatchway.store import Store
from hatchway.store.firmware_records import DeviceFirmware, ReleaseRecord, RolloutRecord

__all__ = ["cancel", "pause", "resume", "rollout", "status"]

VersionArg = Annotated[str, typer.Argument(help="Release version (or release id).")]
ClassOption = Annotated[
    str | None, typer.Option("--class", help="Device class, when VERSION is ambiguous.")
]


def resolve_release(store: Store, version: str, device_class: str | None) -> ReleaseRecord:
    """The one release VERSION (and ``--class``) names; ``ValueError`` (exit 2) otherwise."""
    found = store.find_releases(version, device_class)
    if not found and device_class is None:
        by_id = store.get_release(version)
        found = [by_id] if by_id is not None else []
    if not found:
        what = f"{device_class} {version}" if device_class else version
        raise ValueError(f"no published release {what} (`hatchway firmware publish` first)")
    if len(found) > 1:
        classes = ", ".join(sorted(r.device_class for r in found))
        raise ValueError(
            f"version {version} is published for several classes ({classes}): pass --class"
        )
    return found[0]


def _wake(settings: Settings, devices: list[str]) -> None:
    """Wake the servers' MQTT push loops (PostgreSQL bus); the sweep finds offers anyway."""
    import asyncio
    import logging

    from hatchway.bus import bus_from_url
    from hatchway.mqtt.gateway import wake_pushers

    bus = bus_from_url(settings.database_url or None)
    try:
        for device_id in devices:
            wake_pushers(bus, device_id)
    except Exception as exc:  # the offers are queued; the sweep will push them
        logging.getLogger("hatchway.cli").warning("could not wake the MQTT pushers: %s", exc)
    finally:
        asyncio.run(bus.close())


def _rollout_json(rollout: RolloutRecord | None) -> dict[str, Any] | None:
    if rollout is None:
        return None
    return {
        "rollout": rollout.rollout_id,
        "group": rollout.group_name,
        "state": rollout.state.value,
        "wave": rollout.wave + 1,
        "waves": list(rollout.waves),
        "max_failures": rollout.max_failures,
        "confirm_within": rollout.confirm_within,
        "updated_at": rollout.updated_at,
    }


def status_json(
    release: ReleaseRecord, rollout: RolloutRecord | None, rows: list[DeviceFirmware]
) -> dict[str, Any]:
    counts = Counter(r.state.value for r in rows)
    return {
        "release": release_json(release),
        "rollout": _rollout_json(rollout),
        "counts": {s.value: counts.get(s.value, 0) for s in FwState},
        "failures": sum(1 for r in rows if r.state in FAILED),
        "devices": [
            {
                "device_id": r.device_id,
                "state": r.state.value,
                "progress": r.progress,
                "reason": r.reason,
                "wave": r.wave + 1,
                "updated_at": r.updated_at,
            }
            for r in rows
        ],
    }


def rollout(
    version: VersionArg,
    group: Annotated[str, typer.Option("--group", help="Device group to offer it to.")],
    device_class: ClassOption = None,
    waves: Annotated[
        str, typer.Option("--waves", help="Cumulative waves: 10%,50%,100% or 5,20,100.")
    ] = "100%",
    max_failures: Annotated[
        int, typer.Option("--max-failures", help="Pause when refusals + rollbacks exceed this.")
    ] = 0,
    confirm_within: Annotated[
        int | None, typer.Option("--confirm-within", help="Seconds to confirm the new image.")
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Offer VERSION to GROUP in waves; the first wave is offered now."""
    with errors_reported(as_json):
        with closing(open_firmware_store(data_dir, database_url)) as store:
            release = resolve_release(store, version, device_class)
            created = store.start_rollout(
                release.release_id,
                group,
                waves=waves,
                max_failures=max_failures,
                confirm_within=confirm_within,
                now=system_clock(),
            )
            _, rows = store.rollout_status(release.release_id)
        offered = _offered(rows, created.rollout_id)
        _wake(load_settings(data_dir, database_url), offered)
        data = {"release": release.release_id, **(_rollout_json(created) or {}), "offered": offered}
        emit(
            as_json,
            data,
            lambda: console.print(
                f"rollout of {shown(release.version)} ({shown(release.release_id)}) to "
                f"{shown(group)}: waves {', '.join(map(str, created.waves))}; "
                f"{len(offered)} devices offered now"
            ),
        )


def _move(
    version: str,
    device_class: str | None,
    target: RolloutState,
    data_dir: Any,
    database_url: str | None,
    as_json: bool,
) -> None:
    with errors_reported(as_json):
        with closing(open_firmware_store(data_dir, database_url)) as store:
            release = resolve_release(store, version, device_class)
            moved = store.set_rollout_state(release.release_id, target, now=system_clock())
            _, rows = store.rollout_status(release.release_id)
        if target is RolloutState.ACTIVE:
            # Only this rollout's offers: rows an earlier, cancelled rollout left behind
            # are not this rollout's to push.
            offered = _offered(rows, moved.rollout_id)
            _wake(load_settings(data_dir, database_url), offered)
        data = {"release": release.release_id, **(_rollout_json(moved) or {})}
        emit(
            as_json,
            data,
            lambda: console.print(f"rollout of {shown(release.version)} is {moved.state}"),
        )


def _offered(rows: list[Any], rollout_id: str) -> list[str]:
    """Devices with an undelivered-or-unanswered offer from this rollout."""
    return [r.device_id for r in rows if r.rollout_id == rollout_id and r.state is FwState.OFFERED]


def pause(
    version: VersionArg,
    device_class: ClassOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pause the rollout: no further wave is offered."""
    _move(version, device_class, RolloutState.PAUSED, data_dir, database_url, as_json)


def resume(
    version: VersionArg,
    device_class: ClassOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume a paused rollout (it pauses again at the next failure past the limit)."""
    _move(version, device_class, RolloutState.ACTIVE, data_dir, database_url, as_json)


def cancel(
    version: VersionArg,
    device_class: ClassOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel the rollout: offers not delivered yet are withdrawn."""
    _move(version, device_class, RolloutState.CANCELLED, data_dir, database_url, as_json)


def _view(data: dict[str, Any]) -> Group:
    release, ro = data["release"], data["rollout"]
    head = Text(f"{release['class']} {release['version']} ({release['release']})", style="bold")
    if ro is not None:
        head.append(
            f"  rollout to {ro['group']}: {ro['state']}, wave {ro['wave']}/{len(ro['waves'])}, "
            f"failures {data['failures']}/{ro['max_failures']} allowed",
            style="none",
        )
    counts = "  ".join(f"{k} {v}" for k, v in data["counts"].items() if v)
    table = Table("device", "wave", "state", "progress")
    for row in data["devices"]:
        state = row["state"] + (f": {row['reason']}" if row["reason"] else "")
        progress: Any = ""
        if row["state"] == FwState.DOWNLOADING.value and row["progress"] is not None:
            progress = ProgressBar(total=100, completed=row["progress"], width=20)
        table.add_row(shown(row["device_id"]), str(row["wave"]), shown(state), progress)
    return Group(head, Text(counts or "no devices"), table)


def status(
    version: VersionArg,
    device_class: ClassOption = None,
    watch: Annotated[bool, typer.Option("--watch", help="Live view until the rollout ends.")] = (
        False
    ),
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 1.0,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per-device state of VERSION (offered, downloading n%, ... refused: reason)."""
    with errors_reported(as_json):
        if watch and as_json:
            raise ValueError("--watch is a live view for people; --json prints one object")
        with closing(open_firmware_store(data_dir, database_url)) as store:
            release = resolve_release(store, version, device_class)

            def snapshot() -> dict[str, Any]:
                return status_json(release, *store.rollout_status(release.release_id))

            data = snapshot()
            if not watch:
                emit(as_json, data, lambda: console.print(_view(data)))
                return
            with Live(_view(data), console=console, refresh_per_second=4) as live:
                while data["rollout"] is not None and data["rollout"]["state"] in (
                    RolloutState.ACTIVE.value,
                    RolloutState.PAUSED.value,
                ):
                    time.sleep(max(interval, 0.1))
                    data = snapshot()
                    live.update(_view(data))
