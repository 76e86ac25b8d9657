"""Immutable values the store hands out, and the state-transition tables.

Records are frozen, slotted dataclasses (STYLE.md §3) so a caller cannot mutate
what it read and mistake that for a write. Every allowed status change lives in
one table per entity (STYLE.md §2); the store refuses any move not listed there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

_S = TypeVar("_S", bound=StrEnum)

JsonObject = dict[str, Any]
"""A JSON object as stored in a text column (``json.dumps``)."""


class DeviceStatus(StrEnum):
    PROVISIONED = "provisioned"
    ENROLLED = "enrolled"
    DEREGISTERED = "deregistered"
    #: By the operator (``hatchway device revoke``); only ``provision --force`` leaves it.
    REVOKED = "revoked"


class CommandStatus(StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    DONE = "done"


DEVICE_TRANSITIONS: Mapping[DeviceStatus, frozenset[DeviceStatus]] = {
    # -> provisioned is the operator's reprovision (a fresh one-time secret).
    DeviceStatus.PROVISIONED: frozenset(
        {
            DeviceStatus.PROVISIONED,
            DeviceStatus.ENROLLED,
            DeviceStatus.DEREGISTERED,
            DeviceStatus.REVOKED,
        }
    ),
    DeviceStatus.ENROLLED: frozenset(
        {DeviceStatus.PROVISIONED, DeviceStatus.DEREGISTERED, DeviceStatus.REVOKED}
    ),
    DeviceStatus.DEREGISTERED: frozenset({DeviceStatus.PROVISIONED, DeviceStatus.REVOKED}),
    # Revoked is final for the enrolment: no message, no re-enrolment, until the
    # operator's reprovision starts a new one (the old certificate stays revoked).
    DeviceStatus.REVOKED: frozenset({DeviceStatus.PROVISIONED}),
}

COMMAND_TRANSITIONS: Mapping[CommandStatus, frozenset[CommandStatus]] = {
    # A result may overtake the delivery bookkeeping (the device answers before
    # mark_command_delivered commits), so queued -> done is allowed.
    CommandStatus.QUEUED: frozenset({CommandStatus.DELIVERED, CommandStatus.DONE}),
    # Redelivery once every earlier delivery has expired keeps the command
    # delivered, with a new jti (hatchway.store.commands.deliver_command).
    CommandStatus.DELIVERED: frozenset({CommandStatus.DELIVERED, CommandStatus.DONE}),
    CommandStatus.DONE: frozenset(),
}


def sources_of(table: Mapping[_S, frozenset[_S]], target: _S) -> list[_S]:
    """Every status from which ``target`` may be reached, for a guarded UPDATE."""
    return sorted(s for s, targets in table.items() if target in targets)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    secret_hash: str
    secret_used_at: float | None
    status: DeviceStatus
    signing_jwk: JsonObject | None
    encryption_jwk: JsonObject | None
    suite: JsonObject | None
    certificate_pem: str | None
    created_at: float
    enrolled_at: float | None
    deregistered_at: float | None = None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    message_id: int
    device_id: str
    seq: int
    jti: str
    mid: str | None
    typ: str
    body: JsonObject
    received_at: float


@dataclass(frozen=True, slots=True)
class CommandRecord:
    command_id: str
    device_id: str
    body: JsonObject
    status: CommandStatus
    created_at: float
    delivered_at: float | None
    delivery_jti: str | None
    result: JsonObject | None
    completed_at: float | None


@dataclass(frozen=True, slots=True)
class AcceptResult:
    """Outcome of ``Store.accept_message``.

    ``duplicate`` is true when a message with the same ``mid`` was stored before;
    ``message_id`` then names that earlier message, so the caller can ack it again.
    """

    duplicate: bool
    message_id: int
    #: The server->device sequence number reserved for the reply, in the same
    #: transaction, so answering a message costs one commit instead of two.
    reply_seq: int = 0


@dataclass(frozen=True, slots=True)
class SealedDelivery:
    """What the caller's ``seal`` callback made of a command: the sealed COMMAND message."""

    jti: str
    #: The message's ``exp``: until then no other poll gets this command.
    exp: float
    #: The compact JWE, kept so a retransmitted poll gets these very bytes again.
    reply: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """Outcome of ``Store.deliver_command``."""

    command_id: str
    jti: str
    reply: bytes
    #: True when this poll's ``mid`` had been answered before: ``reply`` is that answer.
    repeated: bool
