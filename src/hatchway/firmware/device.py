"""The device's decision on a verified manifest (issue 9, "the device refuses").

Sans-I/O: the caller passes the trust store, what the device runs now and the
time. ``check_manifest`` returns the manifest to act on or raises
``ManifestRefused`` with the reason the device reports; ``trust_after`` is the
trust store the device persists once it has *installed and confirmed* an image
that carries a rotation statement (learning a key from a manifest that is then
rolled back would let a failed update change the device's trust).

Order of checks: authenticity first (``verify_manifest``), then class (a manifest
for other hardware says nothing else useful), freshness, rollback, precursor
version and the device's space: so a device never acts on an unauthenticated
field, and the reason reported is the most fundamental one.
"""

from __future__ import annotations

from dataclasses import dataclass

from hatchway.firmware.errors import ManifestRefused, RefusalReason
from hatchway.firmware.keys import TrustStore
from hatchway.firmware.manifest import MAX_MANIFEST_BYTES, Manifest, parse_version, verify_manifest

__all__ = ["DevicePosition", "check_manifest", "check_policy", "trust_after"]


@dataclass(frozen=True, slots=True)
class DevicePosition:
    """What a device runs now, as it persists it between updates."""

    device_class: str
    sequence: int  # sequence of the installed manifest; 0 for factory firmware
    version: str
    max_image_size: int | None = None  # the inactive slot's size, if bounded
    max_skew: int = 300  # seconds a manifest's iat may be ahead of our clock

    def __post_init__(self) -> None:
        parse_version(self.version)
        if type(self.sequence) is not int or self.sequence < 0:
            raise ValueError("sequence must be a non-negative integer")


def check_manifest(
    token: bytes | str,
    *,
    trust: TrustStore,
    position: DevicePosition,
    now: float,
    max_size: int = MAX_MANIFEST_BYTES,
) -> Manifest:
    """Accept ``token`` for this device at ``now`` or raise the refusal to report."""
    manifest = verify_manifest(token, trust, now, max_size=max_size)
    check_policy(manifest, position, now)
    return manifest


def check_policy(manifest: Manifest, position: DevicePosition, now: float) -> None:
    """The device's policy on an already authenticated manifest; raises ``ManifestRefused``."""
    if manifest.device_class != position.device_class:
        raise ManifestRefused(
            RefusalReason.WRONG_CLASS,
            f"manifest is for {manifest.device_class!r}, device is {position.device_class!r}",
        )
    if now >= manifest.expires_at:
        raise ManifestRefused(RefusalReason.EXPIRED, "manifest past its exp")
    if manifest.issued_at > now + position.max_skew:
        raise ManifestRefused(RefusalReason.EXPIRED, "manifest issued in the future")
    if manifest.sequence <= position.sequence:
        raise ManifestRefused(
            RefusalReason.ROLLBACK,
            f"sequence {manifest.sequence} is not above installed {position.sequence}",
        )
    if manifest.min_version is not None and parse_version(position.version) < parse_version(
        manifest.min_version
    ):
        raise ManifestRefused(
            RefusalReason.BELOW_MIN_VERSION,
            f"installed {position.version} is below {manifest.min_version}",
        )
    if position.max_image_size is not None and manifest.size > position.max_image_size:
        raise ManifestRefused(RefusalReason.TOO_LARGE, "image larger than the inactive slot")


def trust_after(trust: TrustStore, manifest: Manifest, now: int) -> TrustStore:
    """The trust store after installing ``manifest``: its rotation applied, if any."""
    if manifest.rotation is None:
        return trust
    rotation = manifest.rotation
    return trust.rotate(manifest.kid, rotation.new_key, now, rotation.old_until)
