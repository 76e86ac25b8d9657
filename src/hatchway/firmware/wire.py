"""The firmware wire contract between server and device (issue 9, figure 6).

Two sealed message kinds carry an update (``msgsec/messages.py`` holds their rules):

* ``hatchway-firmware+jwt`` (server -> device), the **offer**: ``release`` (the
  server's opaque id of a published image), ``manifest`` (the compact JWS signed by
  the offline firmware key), ``key`` (the content key wrapped to this device, a
  compact JWE from ``crypt.wrap_content_key``) and ``chunks`` (the path prefix on the
  plain listener; chunk ``i`` is ``GET {chunks}{i}``). Optional ``confirm_within``:
  seconds the device has, after booting the new slot, to confirm it healthy.
* ``hatchway-firmware-report+jwt`` (device -> server), the **report**: ``release``
  and ``state`` (a ``DeviceFirmwareState`` value), with ``reason`` (a
  ``RefusalReason`` or ``RollbackReason`` value) for ``refused`` / ``rolled_back``,
  ``progress`` (whole percent, 0-100) while downloading, and ``mid`` so a report
  re-sealed after a lost ack is stored once.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["RELEASE_ID", "DeviceFirmwareState", "RollbackReason"]

#: A release id: short, URL-path safe, so ``chunks`` needs no escaping.
RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class DeviceFirmwareState(StrEnum):
    """What a device reports about one release (the server adds ``offered``)."""

    DOWNLOADING = "downloading"
    VERIFIED = "verified"  # every chunk and the whole-image digest check out
    INSTALLED = "installed"  # written to the inactive slot and booted, not yet confirmed
    CONFIRMED = "confirmed"  # health check passed; the new slot is the good one
    ROLLED_BACK = "rolled_back"  # back on the old slot; ``reason`` says why
    REFUSED = "refused"  # manifest or image refused; ``reason`` is a RefusalReason


class RollbackReason(StrEnum):
    """Why an installed image was rolled back."""

    HEALTH_CHECK_FAILED = "health_check_failed"
    CONFIRM_TIMEOUT = "confirm_timeout"  # not confirmed within ``confirm_within``
    INSTALL_FAILED = "install_failed"  # the installer failed before boot
