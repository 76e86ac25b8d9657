"""Device side of firmware update (issue 9): A/B install, confirm or roll back, resumable.

updater = make_updater(device, CommandInstaller("./install.sh"))
result = update_once(device, CommandInstaller("./install.sh", "./health.sh"))

See docs/firmware.md ("On the device") for the phases, the installer contract and
the files kept next to the device state file.
"""

from hatchway.device.firmware.identity import FirmwareIdentity, trust_from_enrolment
from hatchway.device.firmware.installer import (
    CommandInstaller,
    Installer,
    InstallError,
    InstallTarget,
)
from hatchway.device.firmware.offer import BadOffer, FirmwareOffer
from hatchway.device.firmware.sdk import HttpChunkSource, make_updater, next_offer, update_once
from hatchway.device.firmware.slots import Pending, Phase, SlotDir, SlotRecord
from hatchway.device.firmware.updater import (
    DownloadInterrupted,
    FetchError,
    Updater,
    UpdateResult,
)

__all__ = [
    "BadOffer",
    "CommandInstaller",
    "DownloadInterrupted",
    "FetchError",
    "FirmwareIdentity",
    "FirmwareOffer",
    "HttpChunkSource",
    "InstallError",
    "InstallTarget",
    "Installer",
    "Pending",
    "Phase",
    "SlotDir",
    "SlotRecord",
    "UpdateResult",
    "Updater",
    "make_updater",
    "next_offer",
    "trust_from_enrolment",
    "update_once",
]
