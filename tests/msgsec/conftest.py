"""Fixtures for the nested-JWT tests: one device, one server, a clock at T0."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import InvalidMessage
from hatchway.msgsec import (
    DecryptionKey,
    KeyAlg,
    Message,
    MessageType,
    OpenPolicy,
    SenderInfo,
    SignAlg,
    SigningKey,
    Suite,
    generate_decryption_key,
    generate_signing_key,
    open_message,
    seal,
)
from hatchway.runtime import SeededRandom

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "jose"
T0 = 1_700_000_000
DEVICE, SERVER = "device-1", "server"
OPAQUE = "invalid message"


def vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@dataclass
class World:
    """A device (sender) enrolled with ``suite`` and a server (recipient)."""

    signing: SigningKey
    decryption: DecryptionKey
    suite: Suite
    rng: SeededRandom

    @property
    def sender(self) -> SenderInfo:
        return SenderInfo(DEVICE, self.signing.public(), self.suite)

    def message(self, **changes: Any) -> Message:
        base = Message(
            MessageType.TELEMETRY, DEVICE, SERVER, T0, T0 + 300, "jti-1", 1, {"readings": {"t": 21}}
        )
        return replace(base, **changes)

    def seal(self, message: Message | None = None, **kw: Any) -> bytes:
        args: dict[str, Any] = {
            "signing_key": self.signing,
            "recipient_key": self.decryption.public(),
            "suite": self.suite,
            "random": self.rng,
        }
        args.update(kw)
        return seal(message or self.message(), **args)

    def open(self, token: bytes | str, **kw: Any) -> tuple[Message, SenderInfo]:
        expected = kw.pop("expected", frozenset({MessageType.TELEMETRY}))
        args: dict[str, Any] = {
            "decryption_keys": {self.decryption.kid: self.decryption},
            "resolve_sender": lambda kid: self.sender if kid == self.signing.kid else None,
            "policy": OpenPolicy(SERVER, expected),
            "now": T0 + 10,
        }
        args.update(kw)
        return open_message(token, **args)

    def rejects(self, token: bytes | str, **kw: Any) -> InvalidMessage:
        with pytest.raises(InvalidMessage) as info:
            self.open(token, **kw)
        assert str(info.value) == OPAQUE
        assert info.value.reason  # the log-only reason is always filled in
        return info.value


def make_world(
    sign: SignAlg = SignAlg.ES256, key: KeyAlg = KeyAlg.ECDH_ES, crv: str = "P-256"
) -> World:
    rng = SeededRandom(f"{sign}-{key}-{crv}".encode())
    return World(
        generate_signing_key(sign, random=rng),
        generate_decryption_key(crv, random=rng),
        Suite(sign, key),
        rng,
    )


@pytest.fixture
def world() -> World:
    return make_world()
