"""Message kinds, the claim set, and the one table of per-kind rules.

Each message is a JWT (RFC 7519 §7.1) whose JOSE ``typ`` names its kind, the
explicit typing of RFC 8725 §3.11: a token minted as one kind can never be read
as another. The claims are the registered ``iss``/``aud``/``iat``/``exp``/``jti``
(RFC 7519 §4.1) plus private ``seq`` (replay window), ``dat`` (body) and ``irt``
(the ``jti`` this message answers).

``RULES`` is the single table that says, per kind, which way it flows, whether
``irt`` is required or forbidden, and which body keys it needs and permits. The
rules are mutually exclusive: every kind either flows the other way, differs in
``irt``, or requires a body key the others do not permit (``tests/msgsec``
checks every pair), so claims valid for one kind are invalid for any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from hatchway.errors import InvalidMessage

__all__ = ["RULES", "Direction", "Message", "MessageType", "Presence", "Rule", "check_rule"]

MAX_SEQ = 2**53  # exclusive: every peer's JSON number stays an exact integer
MAX_ID_LEN = 256  # iss / aud
MAX_JTI_LEN = 128  # jti / irt


class MessageType(StrEnum):
    """The inner JWS ``typ`` of each message kind."""

    TELEMETRY = "hatchway-telemetry+jwt"
    POLL = "hatchway-poll+jwt"
    COMMAND = "hatchway-command+jwt"
    COMMAND_RESULT = "hatchway-command-result+jwt"
    ACK = "hatchway-ack+jwt"
    FIRMWARE_UPDATE = "hatchway-firmware+jwt"
    FIRMWARE_REPORT = "hatchway-firmware-report+jwt"
    DEREGISTER = "hatchway-deregister+jwt"
    KEY_ROTATE = "hatchway-key-rotate+jwt"
    KEY_ROTATED = "hatchway-key-rotated+jwt"
    SERVER_KEYS = "hatchway-server-keys+jwt"
    DEREGISTERED = "hatchway-deregistered+jwt"


class Direction(StrEnum):
    TO_SERVER = "to-server"
    TO_DEVICE = "to-device"


class Presence(Enum):
    REQUIRED = "required"
    FORBIDDEN = "forbidden"
    OPTIONAL = "optional"


class Field(Enum):
    """JSON value kinds a body key may hold (``bool`` is never an ``INT``)."""

    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    OBJECT = "object"
    ANY = "any JSON value"

    def accepts(self, value: object) -> bool:
        # The module-level aliases below, not ``Field.STR``: an enum class
        # attribute lookup costs as much as the check itself.
        if self is STR:
            return isinstance(value, str)
        if self is INT:
            return isinstance(value, int) and not isinstance(value, bool)
        if self is BOOL:
            return isinstance(value, bool)
        if self is OBJ:
            return isinstance(value, dict)
        return True


@dataclass(frozen=True, slots=True)
class Rule:
    """What one kind of message must look like."""

    direction: Direction
    irt: Presence
    required: Mapping[str, Field] = field(default_factory=dict)
    optional: Mapping[str, Field] = field(default_factory=dict)


STR, INT, BOOL, OBJ, ANY = Field.STR, Field.INT, Field.BOOL, Field.OBJECT, Field.ANY
TO_SERVER, TO_DEVICE = Direction.TO_SERVER, Direction.TO_DEVICE
REQ, FORBID, OPT = Presence.REQUIRED, Presence.FORBIDDEN, Presence.OPTIONAL

#: The one table of per-kind rules. Body key sets are closed: a key that is in
#: neither ``required`` nor ``optional`` is rejected, which is what keeps the
#: kinds apart.
RULES: Mapping[MessageType, Rule] = {
    # Device -> server kinds may carry ``mid``: a message id that stays the same when
    # the device re-seals a message after a lost reply, so the server stores it once.
    MessageType.TELEMETRY: Rule(TO_SERVER, FORBID, {"readings": OBJ}, {"mid": STR}),
    MessageType.POLL: Rule(TO_SERVER, FORBID, {}, {"cursor": STR, "max": INT, "mid": STR}),
    MessageType.DEREGISTER: Rule(TO_SERVER, FORBID, {"reason": STR}, {"mid": STR}),
    MessageType.COMMAND_RESULT: Rule(
        TO_SERVER, REQ, {"cid": STR, "ok": BOOL}, {"result": ANY, "error": STR, "mid": STR}
    ),
    MessageType.COMMAND: Rule(TO_DEVICE, OPT, {"cid": STR, "op": STR}, {"args": OBJ}),
    # The firmware offer and the device's report (firmware/wire.py says what each key holds).
    MessageType.FIRMWARE_UPDATE: Rule(
        TO_DEVICE,
        OPT,
        {"release": STR, "manifest": STR, "key": STR, "chunks": STR},
        {"confirm_within": INT},
    ),
    MessageType.FIRMWARE_REPORT: Rule(
        TO_SERVER,
        FORBID,
        {"release": STR, "state": STR},
        {"reason": STR, "progress": INT, "mid": STR},
    ),
    MessageType.ACK: Rule(TO_DEVICE, REQ, {}, {"status": STR}),
    # Key rotation (docs/key-rotation.md; msgsec/rotation.py parses the bodies): the
    # device's new public keys with a proof by the new signing key, the re-issued
    # certificate, and the server's new keys announced in place of an ACK.
    MessageType.KEY_ROTATE: Rule(
        TO_SERVER,
        FORBID,
        {"mid": STR, "signing_key": OBJ, "encryption_key": OBJ, "proof": STR},
    ),
    MessageType.KEY_ROTATED: Rule(
        TO_DEVICE,
        REQ,
        {"certificate": STR, "signing_kid": STR, "encryption_kid": STR, "retires_at": INT},
    ),
    MessageType.SERVER_KEYS: Rule(
        TO_DEVICE, REQ, {"server_keys": OBJ, "retires_at": INT}, {"status": STR}
    ),
    # The operator revoked the device (fig. 7 from the server's side): a reply to the
    # device's next message, or pushed over MQTT. ``revoked_at`` is POSIX seconds.
    MessageType.DEREGISTERED: Rule(TO_DEVICE, OPT, {"reason": STR, "revoked_at": INT}),
}

_KINDS = {k.value: k for k in MessageType}  # a dict hit; MessageType(typ) is ~1 µs
_CLAIMS = frozenset({"iss", "aud", "iat", "exp", "jti", "seq", "dat", "irt"})


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded, verified message (or one about to be sealed)."""

    typ: MessageType
    iss: str
    aud: str
    iat: int
    exp: int
    jti: str
    seq: int
    body: dict[str, Any]  # claim "dat"
    in_reply_to: str | None = None  # claim "irt"

    def __post_init__(self) -> None:
        # A Message that exists has well-typed claims, whether a caller built it
        # or ``from_claims`` parsed it from a peer: one check, one place.
        check_shape(self)

    def to_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.iss,
            "aud": self.aud,
            "iat": self.iat,
            "exp": self.exp,
            "jti": self.jti,
            "seq": self.seq,
            "dat": self.body,
        }
        if self.in_reply_to is not None:
            claims["irt"] = self.in_reply_to
        return claims

    @classmethod
    def from_claims(cls, typ: object, claims: Mapping[str, Any]) -> Message:
        """Type-check a claim set; raises ``InvalidMessage``. Rules are separate."""
        kind = _KINDS.get(typ) if isinstance(typ, str) else None
        if kind is None:
            raise InvalidMessage(reason=f"unknown typ {typ!r}")
        if not claims.keys() <= _CLAIMS:
            raise InvalidMessage(reason=f"unknown claims {sorted(claims.keys() - _CLAIMS)}")
        return cls(
            kind,
            claims.get("iss"),  # type: ignore[arg-type]  # all checked in __post_init__
            claims.get("aud"),  # type: ignore[arg-type]
            claims.get("iat"),  # type: ignore[arg-type]
            claims.get("exp"),  # type: ignore[arg-type]
            claims.get("jti"),  # type: ignore[arg-type]
            claims.get("seq"),  # type: ignore[arg-type]
            claims.get("dat"),  # type: ignore[arg-type]
            claims.get("irt"),
        )


def _text(value: object, name: str, limit: int) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidMessage(reason=f"claim {name} must be a string of 1..{limit} chars")


def _int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidMessage(reason=f"claim {name} must be an integer")


def check_shape(message: Message) -> None:
    """Claim types and ranges that hold for every kind; raises ``InvalidMessage``."""
    if not isinstance(message.typ, MessageType):
        raise InvalidMessage(reason="typ is not a MessageType")
    _text(message.iss, "iss", MAX_ID_LEN)
    _text(message.aud, "aud", MAX_ID_LEN)
    _text(message.jti, "jti", MAX_JTI_LEN)
    if message.in_reply_to is not None:
        _text(message.in_reply_to, "irt", MAX_JTI_LEN)
    _int(message.iat, "iat")
    _int(message.exp, "exp")
    _int(message.seq, "seq")
    if not 0 <= message.seq < MAX_SEQ:
        raise InvalidMessage(reason="seq out of range")
    if not isinstance(message.body, dict):
        raise InvalidMessage(reason="dat must be an object")


def check_rule(message: Message) -> Rule:
    """Apply ``RULES[message.typ]``; returns the rule, raises ``InvalidMessage``."""
    rule = RULES[message.typ]
    has_irt = message.in_reply_to is not None
    if rule.irt is REQ and not has_irt:
        raise InvalidMessage(reason=f"{message.typ}: irt required")
    if rule.irt is FORBID and has_irt:
        raise InvalidMessage(reason=f"{message.typ}: irt forbidden")
    body = message.body
    for key, kind in rule.required.items():
        if key not in body or not kind.accepts(body[key]):
            raise InvalidMessage(reason=f"{message.typ}: body.{key} must be {kind.value}")
    for key, value in body.items():
        if key in rule.required:
            continue
        kind_opt = rule.optional.get(key)
        if kind_opt is None or not kind_opt.accepts(value):
            raise InvalidMessage(reason=f"{message.typ}: body.{key} not allowed")
    return rule
