"""The device authorization response (RFC 8628 §3.2), shared by server and device.

The server builds it from a new login session; the device SDK reads it back from
the endpoint's JSON. One value type for both sides keeps the two in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatchway.login.states import DEFAULT_INTERVAL


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DeviceAuthorization:
        """Read the endpoint's answer; ``interval`` defaults as RFC 8628 §3.2 says."""
        return cls(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body["verification_uri"]),
            verification_uri_complete=str(body["verification_uri_complete"]),
            expires_in=int(body["expires_in"]),
            interval=int(body.get("interval", DEFAULT_INTERVAL)),
        )
