"""Firmware signing keys and the firmware trust store (sans-I/O).

The firmware key is **Ed25519** (JWS ``alg`` ``EdDSA``, RFC 8037 §3.1), and it is
the only algorithm a manifest may use. Why Ed25519 rather than ES256:

* signatures are deterministic (RFC 8032 §5.1.6), so the offline signing machine
  needs no good randomness at signing time and a bad RNG can never leak the key
  the way a repeated ECDSA nonce does;
* verification is strict (``cryptography`` rejects a non-canonical ``S``), so a
  manifest has exactly one valid signature: no malleability for a replay cache
  or a status view to trip over;
* it is one of SUIT's two mandatory-to-implement signature algorithms
  (draft-ietf-suit-mti, ``suit-sha256-eddsa-ecdh-a128ctr``), with small keys
  and constant-time verification on microcontrollers.

Key ids are the RFC 7638 thumbprint (``hatchway.msgsec.keys``), so a kid names
exactly one public key and cannot be reused for another.

Status (the trust store is the same model on the server and on a device):

* ``active``: manifests signed by it are accepted, and the server publishes them;
* ``retired``: rotated away from; devices still accept it until ``not_after``
  (the rotation overlap), the server no longer publishes under it;
* ``revoked``: never accepted again, and a revoked kid cannot be re-added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from hatchway.firmware.errors import ManifestRefused, RefusalReason
from hatchway.msgsec.algorithms import SignAlg
from hatchway.msgsec.keys import SigningKey, VerifyingKey, generate_signing_key

__all__ = [
    "FIRMWARE_ALG",
    "KeyStatus",
    "TrustStore",
    "TrustedKey",
    "generate_firmware_key",
    "load_private_jwk",
    "load_public_jwk",
]

FIRMWARE_ALG = SignAlg.EDDSA
TRUST_FORMAT = "hatchway-fw-trust/1"


class KeyStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


def generate_firmware_key(*, random: Callable[[int], bytes] | None = None) -> SigningKey:
    """A fresh Ed25519 firmware key; ``random`` only for known-answer tests."""
    return generate_signing_key(FIRMWARE_ALG, random=random)


def load_private_jwk(jwk: Mapping[str, Any]) -> SigningKey:
    """A private firmware JWK; anything but an Ed25519 signing key is refused."""
    key = SigningKey.from_jwk(jwk)
    if key.alg is not FIRMWARE_ALG:
        raise ValueError("a firmware key must be an Ed25519 (EdDSA) signing key")
    return key


def load_public_jwk(jwk: Mapping[str, Any]) -> VerifyingKey:
    """A public firmware JWK; private members and non-Ed25519 keys are refused."""
    key = VerifyingKey.from_jwk(jwk)
    if key.alg is not FIRMWARE_ALG:
        raise ValueError("a firmware key must be an Ed25519 (EdDSA) key")
    return key


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One firmware public key and what this holder decided about it."""

    key: VerifyingKey
    status: KeyStatus = KeyStatus.ACTIVE
    added: int = 0  # POSIX seconds
    not_after: int | None = None  # retired: accepted strictly before this time
    revoked_at: int | None = None
    reason: str | None = None  # revocation reason, operator's words

    @property
    def kid(self) -> str:
        return self.key.kid

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jwk": self.key.to_jwk(),
            "status": self.status.value,
            "added": self.added,
        }
        for name in ("not_after", "revoked_at", "reason"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustedKey:
        if not isinstance(data, Mapping):
            raise ValueError("trusted key entry must be an object")
        extra = set(data) - {"jwk", "status", "added", "not_after", "revoked_at", "reason"}
        if extra:
            raise ValueError(f"trusted key entry has unknown members {sorted(extra)}")
        return cls(
            key=load_public_jwk(data.get("jwk")),  # type: ignore[arg-type]
            status=KeyStatus(data.get("status", "active")),
            added=_int(data.get("added", 0), "added"),
            not_after=_opt_int(data.get("not_after"), "not_after"),
            revoked_at=_opt_int(data.get("revoked_at"), "revoked_at"),
            reason=_opt_str(data.get("reason"), "reason"),
        )


class TrustStore:
    """An immutable set of firmware keys by kid; every change returns a new store."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, TrustedKey] | None = None) -> None:
        self._keys: dict[str, TrustedKey] = dict(keys or {})
        for kid, entry in self._keys.items():
            if kid != entry.kid:
                raise ValueError("trust store index does not match the key's kid")

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(sorted(self._keys.values(), key=lambda e: (e.added, e.kid)))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def get(self, kid: str) -> TrustedKey | None:
        return self._keys.get(kid)

    # --- decisions ------------------------------------------------------------

    def verifying_key(self, kid: str, now: float) -> VerifyingKey:
        """The key to verify a manifest under ``kid`` at ``now``, or a typed refusal."""
        entry = self._keys.get(kid)
        if entry is None:
            raise ManifestRefused(RefusalReason.UNTRUSTED_KEY, f"kid {kid!r} is not trusted")
        if entry.status is KeyStatus.REVOKED:
            raise ManifestRefused(RefusalReason.REVOKED_KEY, f"kid {kid!r} is revoked")
        ended = entry.not_after is None or now >= entry.not_after
        if entry.status is KeyStatus.RETIRED and ended:
            raise ManifestRefused(RefusalReason.RETIRED_KEY, f"kid {kid!r} overlap has ended")
        return entry.key

    def can_publish(self, kid: str) -> bool:
        """The server publishes only under an active key (issue 9: not under a revoked one)."""
        entry = self._keys.get(kid)
        return entry is not None and entry.status is KeyStatus.ACTIVE

    # --- changes --------------------------------------------------------------

    def add(self, key: VerifyingKey, now: int) -> TrustStore:
        """Trust ``key`` as active; idempotent for an active key, refused if revoked."""
        if key.alg is not FIRMWARE_ALG:
            raise ValueError("a firmware key must be an Ed25519 (EdDSA) key")
        entry = self._keys.get(key.kid)
        if entry is not None:
            if entry.status is KeyStatus.REVOKED:
                raise ValueError(f"key {key.kid} was revoked and cannot be trusted again")
            if entry.status is KeyStatus.ACTIVE:
                return self
        return self._with(TrustedKey(key, KeyStatus.ACTIVE, added=now))

    def retire(self, kid: str, not_after: int) -> TrustStore:
        entry = self._require(kid)
        if entry.status is KeyStatus.REVOKED:
            raise ValueError(f"key {kid} is revoked; it cannot be retired")
        return self._with(replace(entry, status=KeyStatus.RETIRED, not_after=not_after))

    def revoke(self, kid: str, now: int, reason: str | None = None) -> TrustStore:
        entry = self._require(kid)
        if entry.status is KeyStatus.REVOKED:
            return self
        return self._with(
            replace(entry, status=KeyStatus.REVOKED, revoked_at=now, reason=reason, not_after=None)
        )

    def rotate(self, old_kid: str, new_key: VerifyingKey, now: int, old_until: int) -> TrustStore:
        """Apply a verified rotation: the new key active, the old one retired until ``old_until``.

        An old key that is already retired keeps the earlier end of its overlap, so
        a rotation statement can never extend the life of a key.
        """
        store = self.add(new_key, now)
        old = store._require(old_kid)
        if old.status is KeyStatus.ACTIVE:
            return store.retire(old_kid, old_until)
        if old.status is KeyStatus.RETIRED and old.not_after is not None:
            return store.retire(old_kid, min(old.not_after, old_until))
        return store

    def _require(self, kid: str) -> TrustedKey:
        entry = self._keys.get(kid)
        if entry is None:
            raise KeyError(kid)
        return entry

    def _with(self, entry: TrustedKey) -> TrustStore:
        return TrustStore({**self._keys, entry.kid: entry})

    # --- serialisation ----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"format": TRUST_FORMAT, "keys": [e.to_json() for e in self]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustStore:
        if not isinstance(data, Mapping) or data.get("format") != TRUST_FORMAT:
            raise ValueError(f"not a {TRUST_FORMAT} trust store")
        entries = data.get("keys")
        if not isinstance(entries, list):
            raise ValueError("trust store keys must be a list")
        keys: dict[str, TrustedKey] = {}
        for raw in entries:
            entry = TrustedKey.from_json(raw)
            if entry.kid in keys:
                raise ValueError(f"trust store lists {entry.kid} twice")
            keys[entry.kid] = entry
        return cls(keys)

    @classmethod
    def of(cls, *keys: VerifyingKey, now: int = 0) -> TrustStore:
        store = cls()
        for key in keys:
            store = store.add(key, now)
        return store


def _int(value: object, name: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer")
    return value


def _opt_int(value: object, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _opt_str(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value
