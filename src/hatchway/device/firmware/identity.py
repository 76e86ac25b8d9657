"""The device's firmware position and trust, as kept in its state file (issue 9, "Install").

The ``firmware`` member of the device state file (docs/device-state.md)::

    {"class": "acme-meter-v2", "version": "2.0.0", "sequence": 20,
     "trust": {"format": "hatchway-fw-trust/1", "keys": [...]}}

``class`` is ``null`` for a device enrolled without ``--class``: it refuses every
manifest (``wrong_class``, or ``untrusted_key`` first when it trusts no key). The
trust store comes from the enrolment response's ``"firmware": {"keys": [...]}``
(or ``--firmware-key`` files), and changes only when an update that carries a
rotation is *confirmed* (``trust_after``). A state file written before issue 9 has
no member: factory firmware ``0`` at sequence 0, no class, no trust.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.firmware import DevicePosition, TrustStore, load_public_jwk, parse_version
from hatchway.firmware.keys import KeyStatus, TrustedKey
from hatchway.firmware.manifest import Manifest
from hatchway.msgsec.keys import VerifyingKey

__all__ = ["FirmwareIdentity", "trust_from_enrolment"]

log = logging.getLogger("hatchway.device.firmware")

_MEMBERS = frozenset({"class", "version", "sequence", "trust"})
_MAX_SEQ = 2**53 - 1
#: More firmware keys than this in an enrolment answer is not a trust list.
MAX_ENROLMENT_KEYS = 16


@dataclass(frozen=True, slots=True)
class FirmwareIdentity:
    """What this device runs and whom it trusts to sign firmware."""

    device_class: str | None = None
    version: str = "0"
    sequence: int = 0
    trust: TrustStore = field(default_factory=TrustStore)

    def __post_init__(self) -> None:
        parse_version(self.version)
        if type(self.sequence) is not int or not 0 <= self.sequence <= _MAX_SEQ:
            raise ValueError("firmware sequence must be an integer 0..2^53-1")
        if self.device_class is not None and not (
            isinstance(self.device_class, str) and 0 < len(self.device_class) <= 64
        ):
            raise ValueError("device class must be a string of 1..64 characters")

    def position(self, max_image_size: int | None = None) -> DevicePosition:
        # No class: "" matches no manifest's class (which is never empty).
        return DevicePosition(
            device_class=self.device_class or "",
            sequence=self.sequence,
            version=self.version,
            max_image_size=max_image_size,
        )

    def after(self, manifest: Manifest, trust: TrustStore) -> FirmwareIdentity:
        """The identity once ``manifest``'s image is confirmed, with ``trust`` applied."""
        return FirmwareIdentity(self.device_class, manifest.version, manifest.sequence, trust)

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.device_class,
            "version": self.version,
            "sequence": self.sequence,
            "trust": self.trust.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FirmwareIdentity:
        """Parse the state file's member; an absent or empty one is factory firmware."""
        if not data:
            return cls()
        if not isinstance(data, Mapping) or not set(data) <= _MEMBERS:
            raise ValueError("firmware: unknown members in the state file")
        device_class = data.get("class")
        version = data.get("version", "0")
        sequence = data.get("sequence", 0)
        if device_class is not None and not isinstance(device_class, str):
            raise ValueError("firmware.class must be a string or null")
        if not isinstance(version, str):
            raise ValueError("firmware.version must be a string")
        if type(sequence) is not int:
            raise ValueError("firmware.sequence must be an integer")
        trust = data.get("trust")
        return cls(
            device_class=device_class,
            version=version,
            sequence=sequence,
            trust=TrustStore() if trust is None else TrustStore.from_json(trust),
        )


def trust_from_enrolment(
    answer: object, now: int, *, pinned: Iterable[VerifyingKey] = ()
) -> TrustStore:
    """The firmware trust a device takes from enrolment.

    ``pinned`` keys (``--firmware-key``, provisioned out of band) win: when given, the
    server's list is ignored, so a server compromised at enrolment time cannot choose
    the device's firmware signer. Otherwise the keys come from the answer's
    ``"firmware": {"keys": [...]}``: each a trust entry as the server keeps it
    (``{"jwk", "status", "added", "not_after"?, "revoked_at"?}``, so a revoked or
    retired key keeps that status here) or a bare public JWK (trusted as active). A
    missing member means no trust at all (every manifest is refused as
    ``untrusted_key``). An entry that is not an Ed25519 public key is left out, never
    half-trusted.
    """
    pinned_keys = list(pinned)
    if pinned_keys:
        return TrustStore.of(*pinned_keys, now=now)
    section = answer.get("firmware") if isinstance(answer, Mapping) else None
    listed = section.get("keys") if isinstance(section, Mapping) else None
    if not isinstance(listed, list):
        return TrustStore()
    entries: dict[str, TrustedKey] = {}
    for raw in listed[:MAX_ENROLMENT_KEYS]:
        if not isinstance(raw, Mapping):
            continue
        try:
            if "jwk" in raw:
                entry = TrustedKey.from_json({k: v for k, v in raw.items() if k != "reason"})
            else:
                entry = TrustedKey(load_public_jwk(raw), KeyStatus.ACTIVE, added=now)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("enrolment: ignored a firmware key entry: %s", exc)
            continue
        if entry.kid not in entries:
            entries[entry.kid] = entry
    return TrustStore(entries)
