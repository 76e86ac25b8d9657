"""Why a device refuses a firmware manifest or image (issue 9, "each refusal is reported").

Two kinds of failure, kept apart on purpose:

* **Opaque** (``InvalidManifest``): the token does not parse, a header is outside
  the allow-list, or the signature does not verify. Like ``InvalidMessage`` it
  carries one public reason, ``invalid``, so a device's report is no oracle for
  which cryptographic check failed; the detail is in ``log_reason`` only.
* **Policy refusals** (``ManifestRefused``): the manifest is authentic (or names a
  key the device has decided about), and the device declines it for a reason the
  operator must see in the rollout status: rollback, wrong class, expired, and so on.
  These reasons are wire values: the device reports ``reason.value`` to the server.
"""

from __future__ import annotations

from enum import StrEnum

from hatchway.errors import RemoteProtocolError

__all__ = ["ChunkRefused", "InvalidManifest", "ManifestRefused", "RefusalReason"]


class RefusalReason(StrEnum):
    """The reason a device reports when it refuses an update."""

    INVALID = "invalid"  # opaque: parse, header allow-list or signature failure
    TOO_LARGE = "too_large"  # manifest over the size cap, or image over the device's space
    UNTRUSTED_KEY = "untrusted_key"  # kid not in the device's firmware trust store
    REVOKED_KEY = "revoked_key"  # kid known and revoked
    RETIRED_KEY = "retired_key"  # kid rotated away from and its overlap has ended
    ROLLBACK = "rollback"  # sequence lower than or equal to the installed one
    WRONG_CLASS = "wrong_class"  # manifest is for another device class
    EXPIRED = "expired"  # past exp (freeze attack) or issued in the future
    BELOW_MIN_VERSION = "below_min_version"  # installed version under min_version
    DIGEST_MISMATCH = "digest_mismatch"  # assembled image's SHA-256 differs
    BAD_ROTATION = "bad_rotation"  # rotation statement without a valid proof by the new key


class ManifestRefused(RemoteProtocolError):
    """The device refuses the manifest or image; ``reason`` is what it reports."""

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"firmware refused: {reason.value}")
        self.reason = reason
        self.detail = detail  # for logs; may name the failing value, never a secret


class InvalidManifest(ManifestRefused):
    """Opaque failure: every parse, header or signature problem is this, reason ``invalid``."""

    def __init__(self, log_reason: str = "") -> None:
        super().__init__(RefusalReason.INVALID)
        # Deliberately not ``detail``: a caller that reports ``detail`` upstream
        # must not leak which cryptographic check failed.
        self.log_reason = log_reason


class ChunkRefused(RemoteProtocolError):
    """A chunk that failed its hash or its AEAD tag: fetch it again, never install it."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"chunk {index} must be fetched again")
        self.index = index
        self.why = why
