"""The algorithm allow-list for nested message JWTs.

RFC 8725 §3.1 and §3.2: a receiver must accept only the algorithms it chose, never
the ones a token names. hatchway allows exactly:

* signature (inner JWS, RFC 7518 §3.4 and RFC 8037 §3.1): ``ES256`` and ``EdDSA``
  (Ed25519 only);
* key management (outer JWE, RFC 7518 §4.6): ``ECDH-ES`` and ``ECDH-ES+A256KW``
  on P-256 or X25519 (RFC 8037 §3.2);
* content encryption (RFC 7518 §5.3): ``A256GCM``.

A ``Suite`` pins one choice of each per device, so a device enrolled with ES256
cannot later be impersonated by an EdDSA token under the same key id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hatchway.errors import InvalidMessage

__all__ = ["DEFAULT_SUITE", "EncAlg", "KeyAlg", "SignAlg", "Suite"]


class SignAlg(StrEnum):
    """JWS ``alg`` values for the inner, signed token."""

    ES256 = "ES256"
    EDDSA = "EdDSA"


class KeyAlg(StrEnum):
    """JWE ``alg`` values for the outer, encrypted token."""

    ECDH_ES = "ECDH-ES"
    ECDH_ES_A256KW = "ECDH-ES+A256KW"


class EncAlg(StrEnum):
    """JWE ``enc`` values."""

    A256GCM = "A256GCM"


@dataclass(frozen=True, slots=True)
class Suite:
    """The algorithms pinned for one device, stored with its enrolment."""

    sign: SignAlg
    key: KeyAlg = KeyAlg.ECDH_ES
    enc: EncAlg = EncAlg.A256GCM

    def __post_init__(self) -> None:
        # Coerce plain strings (e.g. from a database row) and reject anything
        # outside the enums; a Suite that exists is always a valid one.
        object.__setattr__(self, "sign", SignAlg(self.sign))
        object.__setattr__(self, "key", KeyAlg(self.key))
        object.__setattr__(self, "enc", EncAlg(self.enc))

    def to_json(self) -> dict[str, str]:
        return {"sign": self.sign.value, "key": self.key.value, "enc": self.enc.value}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Suite:
        """Parse a stored or peer-supplied suite; unknown values are rejected.

        Raises ``InvalidMessage`` (a ``ValueError`` is never raised to callers
        for malformed input, so one except clause covers peer data).
        """
        if not isinstance(d, Mapping) or set(d) - {"sign", "key", "enc"} or "sign" not in d:
            raise InvalidMessage(reason="suite: unexpected members")
        try:
            return cls(
                sign=SignAlg(d["sign"]),
                key=KeyAlg(d.get("key", KeyAlg.ECDH_ES.value)),
                enc=EncAlg(d.get("enc", EncAlg.A256GCM.value)),
            )
        except (ValueError, TypeError) as exc:
            raise InvalidMessage(reason=f"suite: unknown algorithm {exc}") from None


DEFAULT_SUITE = Suite(SignAlg.ES256, KeyAlg.ECDH_ES)
