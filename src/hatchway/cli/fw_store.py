"""The operator's firmware commands open the store here (issue 9).

The firmware trust store lived in ``firmware-trust.json`` in the data dir before
revision 0006_firmware. Opening the store through ``open_firmware_store`` merges
such a file in once (``hatchway.flows.firmware.import_legacy_trust``), the same
step ``hatchway serve`` takes at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hatchway.cli.common import load_settings
from hatchway.runtime import system_clock

if TYPE_CHECKING:
    from hatchway.store import Store

__all__ = ["open_firmware_store"]


def open_firmware_store(data_dir: Path | None, database_url: str | None) -> Store:
    from hatchway.flows.firmware import import_legacy_trust
    from hatchway.store import Store

    settings = load_settings(data_dir, database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store.open(settings.resolved_database_url)
    try:
        import_legacy_trust(store, settings.data_dir, now=system_clock())
    except BaseException:
        store.close()
        raise
    return store
