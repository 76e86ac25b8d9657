"""Firmware offers and reports on the sealed channel, server side (issue 9, figure 6).

Two small pieces the message service plugs in:

* ``Offers.body``: a queued command row whose body is ``{"firmware_offer": <release>}``
  is sealed as ``FIRMWARE_UPDATE`` rather than ``COMMAND``: the release, its signed
  manifest, the content key wrapped to *this* device's encryption key at delivery
  time (``firmware.crypt.wrap_content_key``) and the chunk path on the plain
  listener. The delivery itself (one per poll ``mid``, the same bytes for a
  retransmission) is the command machinery's.
* ``record_report``: a ``FIRMWARE_REPORT`` moves the device along the transition
  table in ``hatchway.firmware.rollout``; the store advances the rollout in the
  same transaction.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hatchway.errors import InvalidMessage
from hatchway.firmware.crypt import wrap_content_key
from hatchway.firmware.files import TRUST_FILE, load_trust
from hatchway.firmware.rollout import check_report
from hatchway.firmware.wire import RELEASE_ID
from hatchway.msgsec import EncryptionKey
from hatchway.runtime import Random
from hatchway.store import Store
from hatchway.store.firmware_records import ReleaseRecord, ReportStatus
from hatchway.store.rollouts import CONFIRM_KEY, OFFER_KEY

__all__ = [
    "CHUNK_PATH",
    "Offers",
    "check_report_body",
    "chunk_prefix",
    "firmware_keys",
    "firmware_metadata",
    "import_legacy_trust",
    "record_report",
]

log = logging.getLogger("hatchway.firmware")

#: Chunks on the plain listener: ``GET /fw/<release>/<index>``.
CHUNK_PATH = "/fw/"


def chunk_prefix(release_id: str) -> str:
    return f"{CHUNK_PATH}{release_id}/"


def import_legacy_trust(store: Store, data_dir: Path, *, now: float) -> int:
    """Merge ``firmware-trust.json`` (before revision 0006) into the store, once.

    The file is renamed to ``firmware-trust.json.imported`` afterwards, so it is read
    once and an operator can still see what it held.
    """
    path = Path(data_dir) / TRUST_FILE
    if not path.is_file():
        return 0
    added = store.import_firmware_trust(load_trust(Path(data_dir)), now=now)
    path.replace(path.with_name(TRUST_FILE + ".imported"))
    log.info("imported %d firmware keys from %s", added, path)
    return added


def firmware_keys(store: Store) -> list[dict[str, Any]]:
    """The server's firmware keys as a device stores them: ``TrustedKey.to_json()`` entries.

    Each is ``{"jwk", "status", "added"}`` plus ``not_after`` (retired) and
    ``revoked_at`` (revoked) when set; the operator's revocation ``reason`` stays on
    the server. Revoked keys are listed too, so a device refuses them for good.
    """
    return [
        {k: v for k, v in entry.to_json().items() if k != "reason"}
        for entry in store.firmware_trust()
    ]


def firmware_metadata(store: Store, plain_base_url: str) -> dict[str, Any]:
    """The server metadata's ``hatchway_firmware`` member."""
    return {"keys": firmware_keys(store), "chunks_endpoint": plain_base_url + CHUNK_PATH}


def is_offer(body: dict[str, Any]) -> bool:
    """An offer row: the marker (and ``confirm_within``). Operator commands have an ``op``."""
    return (
        isinstance(body.get(OFFER_KEY), str)
        and set(body) <= {OFFER_KEY, CONFIRM_KEY}
        and isinstance(body.get(CONFIRM_KEY, 0), int)
    )


class Offers:
    """Seals offer rows; published releases are immutable, so they are cached by id."""

    def __init__(self, store: Store, random: Random, size: int = 64) -> None:
        self.store = store
        self.random = random
        self._size = size
        self._releases: OrderedDict[str, ReleaseRecord] = OrderedDict()
        self._lock = threading.Lock()

    def body(self, queued: dict[str, Any], recipient: EncryptionKey) -> dict[str, Any] | None:
        """The FIRMWARE_UPDATE body for an offer row, or None if the row is no offer.

        The content key is wrapped here, at delivery, to the encryption key of the
        device whose row it is (the caller's ``recipient``).
        """
        if not is_offer(queued):
            return None
        release = self._release(str(queued[OFFER_KEY]))
        out: dict[str, Any] = {
            "release": release.release_id,
            "manifest": release.manifest,
            "key": wrap_content_key(
                release.content_key, release.sha256, recipient, self.random
            ).decode("ascii"),
            "chunks": chunk_prefix(release.release_id),
        }
        if CONFIRM_KEY in queued:
            out[CONFIRM_KEY] = queued[CONFIRM_KEY]
        return out

    def _release(self, release_id: str) -> ReleaseRecord:
        with self._lock:
            hit = self._releases.get(release_id)
            if hit is not None:
                self._releases.move_to_end(release_id)
                return hit
        release = self.store.get_release(release_id)
        if release is None:
            # Releases are never deleted while a rollout row points at them.
            raise LookupError(f"offer of unknown release {release_id!r}")
        with self._lock:
            self._releases[release_id] = release
            while len(self._releases) > self._size:
                self._releases.popitem(last=False)
        return release


def check_report_body(body: dict[str, Any]) -> None:
    """Refuse a malformed report before anything is stored (``InvalidMessage``)."""
    release = body.get("release")
    if not isinstance(release, str) or RELEASE_ID.fullmatch(release) is None:
        raise InvalidMessage("firmware report names no release")
    try:
        check_report(body.get("state"), body.get("reason"), body.get("progress"))
    except ValueError as exc:
        raise InvalidMessage(f"firmware report: {exc}") from None


def record_report(store: Store, device_id: str, body: dict[str, Any], now: float) -> str:
    """Record a checked report; returns the ack status (``ReportStatus`` value)."""
    target = check_report(body.get("state"), body.get("reason"), body.get("progress"))
    progress = body.get("progress")
    reason = body.get("reason")
    outcome = store.record_firmware_report(
        device_id,
        str(body["release"]),
        target,
        reason=reason if isinstance(reason, str) else None,
        progress=progress if isinstance(progress, int) else None,
        now=now,
    )
    if outcome.status is ReportStatus.REFUSED:
        log.warning(
            "firmware report refused: %s",
            outcome.detail,
            extra={"device_id": device_id, "release": body["release"]},
        )
    elif outcome.rollout_state is not None:
        log.info(
            "firmware report %s: %s",
            outcome.status.value,
            target.value,
            extra={"device_id": device_id, "release": body["release"]},
        )
    return outcome.status.value
