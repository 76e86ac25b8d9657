"""Errors the store raises on purpose.

Each one says what the caller asked for that the stored state does not allow; the
HTTP status hint lets an adapter map it without a lookup table of its own.
"""

from __future__ import annotations

from hatchway.errors import HatchwayError, InvalidMessage


class StoreError(HatchwayError):
    """Base class for the store's deliberate errors."""


class DeviceExists(StoreError):
    """``provision_device`` was called for an id that is already taken."""

    status_hint = 409


class UnknownDevice(StoreError):
    """No device with this id has been provisioned."""

    status_hint = 404


class SecretAlreadyUsed(StoreError):
    """The one-time enrolment secret was consumed before (or can no longer be used)."""

    status_hint = 409


class KeyIdTaken(StoreError):
    """Another device already enrolled a signing key with this ``kid``."""

    status_hint = 409


class UnknownCommand(StoreError):
    """No command with this id exists for the device named."""

    status_hint = 404


class InvalidTransition(StoreError):
    """A state change that is not in the transition table (STYLE.md §2)."""

    status_hint = 409


class ReplayedJti(InvalidMessage):
    """A message's ``jti`` was seen before for this device.

    It is an :class:`~hatchway.errors.InvalidMessage` so that adapters treat a
    replay exactly like every other failed check: same opaque error, no oracle.
    """

    def __init__(self, reason: str = "jti replayed") -> None:
        super().__init__(reason)
