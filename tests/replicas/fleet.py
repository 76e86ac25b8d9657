"""Meters for the replica-failure test: SDK devices whose transports record what was
acknowledged, and lose a reply on purpose when told to.

A lost reply is the case the SDK's retry exists for: the server stored the message,
but the device never heard so, and re-seals the same payload (same ``mid``, fresh
``seq``/``jti``). The server must acknowledge the copy as a ``duplicate`` and store
nothing twice. The transports here drop the reply *after* the real server answered,
so nothing in the server is stood in for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hatchway.device import Device, HttpTransport, MqttTransport, TransportError


class _Recording:
    """Mixed into a real transport: which tokens were answered, which replies were lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tokens whose (sealed) reply reached the device: the server accepted them.
        self.accepted: list[bytes] = []
        #: Tokens the server answered but whose reply was dropped here (also accepted).
        self.lost: list[bytes] = []
        #: Drop the reply to the next request (the SDK then retransmits, same mid).
        self.lose_next = False
        #: Requests the real transport failed (connection broken, no reply in time).
        self.failures = 0

    def __call__(self, url: str, token: bytes) -> bytes:
        try:
            reply: bytes = super().__call__(url, token)  # type: ignore[misc]
        except TransportError:
            self.failures += 1
            raise
        if self.lose_next:
            self.lose_next = False
            self.lost.append(token)
            raise TransportError("reply lost on the way back (test)")
        self.accepted.append(token)
        return reply


class RecordingHttp(_Recording, HttpTransport):
    pass


class RecordingMqtt(_Recording, MqttTransport):
    pass


@dataclass
class Meter:
    """One device streaming ``count`` readings; the outcome of every send is kept."""

    name: str
    transport: str  # "http" or "mqtt"
    device: Device
    wire: RecordingHttp | RecordingMqtt
    #: reading index -> the ack's status ("stored" or "duplicate").
    acked: dict[int, str] = field(default_factory=dict)
    #: Readings whose first reply was dropped on purpose.
    lost: set[int] = field(default_factory=set)
    error: BaseException | None = None

    def stream(
        self,
        indexes: range,
        *,
        lose: Callable[[int], bool],
        after_ack: Callable[[Meter, int, bytes], None],
        progress: Callable[[], None],
    ) -> None:
        try:
            for i in indexes:
                self.wire.lose_next = lose(i)
                if self.wire.lose_next:
                    self.lost.add(i)
                ack = self.device.send({"meter": self.name, "i": i})
                self.acked[i] = str(ack.body["status"])
                after_ack(self, i, self.wire.accepted[-1])
                progress()
        except BaseException as exc:  # reported by the test's main thread
            self.error = exc


class Progress:
    """A thread-safe count of acknowledged readings, with a wait on a threshold."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def wait_for(self, threshold: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count >= threshold, timeout)
