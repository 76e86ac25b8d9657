"""``hatchway device rotate-keys``: rotate a device's keys over the sealed channel.

Device side of docs/key-rotation.md: new keys are saved to ``--state`` before
anything is sent; running the command again after a crash or a lost reply finishes
the same rotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hatchway.cli.common import JsonOption
from hatchway.cli.output import console, emit, errors_reported, shown

StateOption = Annotated[Path, typer.Option("--state", help="The device state file (JSON, 0600).")]


def rotate_keys(state: StateOption, as_json: JsonOption = False) -> None:
    """Rotate this device's signing and encryption keys; the server re-issues its certificate."""
    from hatchway.device import Device

    with errors_reported(as_json):
        with Device.load(state) as device:
            reply = device.rotate_keys()
            device_id = device.device_id
        body = reply.body
        emit(
            as_json,
            {
                "device_id": device_id,
                "signing_kid": body["signing_kid"],
                "encryption_kid": body["encryption_kid"],
                "old_key_retires_at": body["retires_at"],
            },
            lambda: console.print(
                f"{shown(device_id)}: keys rotated, new signing key {shown(body['signing_kid'])}, "
                "certificate re-issued",
                highlight=False,
            ),
        )
