"""hatchway's MQTT topic scheme (docs/mqtt.md), sans-I/O.

One uplink and one downlink topic per device, under a configurable prefix::

    {prefix}/d/{device_id}/up      the device publishes sealed messages (QoS 1)
    {prefix}/d/{device_id}/down    the server publishes replies and pushed commands

The server reads every uplink through an MQTT 5 shared subscription
(``$share/{group}/{prefix}/d/+/up``, MQTT 5.0 §4.8.2), so each replica takes a share.
Device ids are ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}`` (enrolment's rule): no ``/``,
``+``, ``#`` or ``$``, so an id is always exactly one topic level and can be
substituted into a broker ACL pattern (``%u``) safely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "hatchway/v1"
DEFAULT_SHARE_GROUP = "hatchway"
UPLINK = "up"
DOWNLINK = "down"

#: Topic levels: printable, no wildcards, no leading ``$`` (reserved for the broker).
_LEVEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_GROUP = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: The enrolment flow's device id rule (flows.enrolment.DEVICE_ID_RE; a test keeps them
#: equal). Repeated here so that this module stays free of server imports.
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_prefix(prefix: str) -> str:
    """A prefix of 1..8 plain levels, e.g. ``hatchway/v1`` or ``site-3/hatchway``."""
    levels = prefix.split("/")
    if not 1 <= len(levels) <= 8 or not all(_LEVEL.fullmatch(level) for level in levels):
        raise ValueError(
            "the MQTT topic prefix is 1 to 8 levels of [A-Za-z0-9._-] separated by '/'"
        )
    return prefix


def check_share_group(group: str) -> str:
    # MQTT 5.0 §4.8.2: a ShareName must not contain '/', '+' or '#'.
    if not _GROUP.fullmatch(group):
        raise ValueError("the MQTT share group is 1 to 64 of [A-Za-z0-9._-]")
    return group


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def uplink(self, device_id: str) -> str:
        return f"{self.prefix}/d/{_device(device_id)}/{UPLINK}"

    def downlink(self, device_id: str) -> str:
        return f"{self.prefix}/d/{_device(device_id)}/{DOWNLINK}"

    @property
    def uplink_filter(self) -> str:
        """Every device's uplink: what the server reads."""
        return f"{self.prefix}/d/+/{UPLINK}"

    @property
    def downlink_filter(self) -> str:
        """Every device's downlink: what the server writes."""
        return f"{self.prefix}/d/+/{DOWNLINK}"

    def uplink_template(self) -> str:
        return f"{self.prefix}/d/{{device_id}}/{UPLINK}"

    def downlink_template(self) -> str:
        return f"{self.prefix}/d/{{device_id}}/{DOWNLINK}"

    def shared_subscription(self, group: str) -> str:
        return f"$share/{check_share_group(group)}/{self.uplink_filter}"

    def device_of_uplink(self, topic: str) -> str | None:
        """The device id an uplink topic names, or None for any other topic."""
        head = self.prefix + "/d/"
        tail = "/" + UPLINK
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        device_id = topic[len(head) : len(topic) - len(tail)]
        return device_id if DEVICE_ID_RE.fullmatch(device_id) else None


def _device(device_id: str) -> str:
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"{device_id!r} is not a device id")
    return device_id
