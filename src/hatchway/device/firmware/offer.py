"""The firmware offer as the device reads it (``hatchway-firmware+jwt``, firmware/wire.py).

The sealed channel has already authenticated the server and checked the body's key
set and types (msgsec/messages.py ``RULES``); this adds the value checks the device
relies on before it acts: a release id it can put in a report, a chunk path that
stays a path on the plain listener (no scheme, host, query or ``..``), and bounds on
everything else. The manifest itself is checked later against the device's own
firmware trust (``check_manifest``), never because the server sent it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatchway.firmware.crypt import MAX_WRAPPED_BYTES
from hatchway.firmware.manifest import MAX_MANIFEST_BYTES
from hatchway.firmware.wire import RELEASE_ID

__all__ = ["DEFAULT_CONFIRM_WITHIN", "MAX_CONFIRM_WITHIN", "BadOffer", "FirmwareOffer"]

#: Seconds to confirm a booted image when the offer does not say.
DEFAULT_CONFIRM_WITHIN = 600
MAX_CONFIRM_WITHIN = 7 * 86400
_CHUNKS = re.compile(r"/[A-Za-z0-9._~/-]{0,511}", re.ASCII)


class BadOffer(ValueError):
    """The offer's values are unusable; ``release`` is set when it can still be reported."""

    def __init__(self, why: str, release: str | None = None) -> None:
        super().__init__(why)
        self.release = release


@dataclass(frozen=True, slots=True)
class FirmwareOffer:
    release: str
    manifest: str
    key: str
    chunks: str  # path prefix on the plain listener; chunk i is GET {chunks}{i}
    confirm_within: int = DEFAULT_CONFIRM_WITHIN

    def chunk_path(self, index: int) -> str:
        return f"{self.chunks}{index}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> FirmwareOffer:
        release = body.get("release")
        if not isinstance(release, str) or not RELEASE_ID.fullmatch(release):
            raise BadOffer("offer: release id is not a short path-safe name")
        manifest, key, chunks = body.get("manifest"), body.get("key"), body.get("chunks")
        within = body.get("confirm_within", DEFAULT_CONFIRM_WITHIN)
        if not isinstance(manifest, str) or len(manifest) > MAX_MANIFEST_BYTES:
            raise BadOffer("offer: manifest missing or too large", release)
        if not isinstance(key, str) or len(key) > MAX_WRAPPED_BYTES:
            raise BadOffer("offer: wrapped key missing or too large", release)
        if not isinstance(chunks, str) or not _CHUNKS.fullmatch(chunks) or ".." in chunks:
            raise BadOffer("offer: chunk path is not a plain path", release)
        if "//" in chunks:
            raise BadOffer("offer: chunk path is not a plain path", release)
        if type(within) is not int or not 0 < within <= MAX_CONFIRM_WITHIN:
            raise BadOffer("offer: confirm_within out of range", release)
        return cls(release, manifest, key, chunks, within)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "manifest": self.manifest,
            "key": self.key,
            "chunks": self.chunks,
            "confirm_within": self.confirm_within,
        }
