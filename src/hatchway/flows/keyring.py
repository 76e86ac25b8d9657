"""The server's message keys across rotations (issue 9 "Key rotation", docs/key-rotation.md).

Generation 1 is the data dir's ``message-keys.json``. ``hatchway keys rotate`` adds
the next generation to the store and gives every live older one a ``retires_at``
(the overlap). The highest generation is *current*: new devices learn it at
enrolment and the JWKS lists it first. A retiring generation still opens what
devices sealed to it, and the server answers such a device under the key it used,
announcing the current keys (``SERVER_KEYS``). Past ``retires_at`` it opens nothing.

Replicas share the generations through the store and re-read them every
``server_key_refresh`` seconds (and at the next retirement), so a rotation done by
the CLI reaches every replica without a restart. The private halves are AES-GCM
wrapped under a key derived (HKDF, RFC 5869) from ``message-keys.json``, which every
replica already holds: the database alone does not reveal them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hatchway.errors import ConfigurationError
from hatchway.msgsec import (
    DecryptionKey,
    SignAlg,
    SigningKey,
    generate_decryption_key,
    generate_signing_key,
)
from hatchway.msgsec._codec import CodecError, b64d, b64e, dumps, loads_object
from hatchway.msgsec.rotation import recipient_kid
from hatchway.runtime import Clock, Random
from hatchway.server.datadir import ServerIdentity
from hatchway.store import ServerKeyRow, Store

__all__ = ["KeyGeneration", "ServerKeyring", "rotate_server_keys"]

_WRAP_INFO = b"hatchway server message-key wrap v1"
_PREFIX = "v1."


@dataclass(frozen=True, slots=True)
class KeyGeneration:
    """One generation of the server's message keys."""

    generation: int
    signing: SigningKey
    decryption: DecryptionKey
    created_at: float
    retires_at: float | None

    def live(self, now: float) -> bool:
        return self.retires_at is None or now < self.retires_at


class _Wrapper:
    """AES-256-GCM under a key derived from the data dir's message keys."""

    def __init__(self, identity: ServerIdentity) -> None:
        material = dumps(
            {
                "signing": identity.signing_key.to_jwk(private=True),
                "encryption": identity.decryption_key.to_jwk(private=True),
            }
        )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAP_INFO).derive(
            material
        )
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(generation: int) -> bytes:
        return f"hatchway-server-keys:{generation}".encode()

    def wrap(
        self, generation: int, signing: SigningKey, decryption: DecryptionKey, random: Random
    ) -> str:
        nonce = random(12)
        plain = dumps({"signing": signing.to_jwk(), "encryption": decryption.to_jwk()})
        sealed = self._aead.encrypt(nonce, plain, self._aad(generation))
        return _PREFIX + b64e(nonce + sealed).decode("ascii")

    def unwrap(self, row: ServerKeyRow) -> KeyGeneration:
        try:
            if not row.wrapped.startswith(_PREFIX):
                raise ValueError("unknown wrapping")
            raw = b64d(row.wrapped[len(_PREFIX) :].encode("ascii"))
            plain = self._aead.decrypt(raw[:12], raw[12:], self._aad(row.generation))
            data = loads_object(plain)
            signing = SigningKey.from_jwk(data["signing"])
            decryption = DecryptionKey.from_jwk(data["encryption"])
        except (InvalidTag, CodecError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"server key generation {row.generation} cannot be opened with this data "
                f"dir's message-keys.json (every replica needs the same file): {exc!r}"
            ) from None
        return KeyGeneration(row.generation, signing, decryption, row.created_at, row.retires_at)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    generations: tuple[KeyGeneration, ...]  # oldest first
    by_encryption_kid: Mapping[str, KeyGeneration]
    decryption_keys: Mapping[str, DecryptionKey]  # live at the last refresh
    due: float


class ServerKeyring:
    """The generations this replica uses; refreshed from the store when due."""

    def __init__(
        self,
        store: Store,
        identity: ServerIdentity,
        *,
        clock: Clock,
        random: Random,
        refresh_interval: float = 10.0,
    ) -> None:
        self.store = store
        self.identity = identity
        self.random = random
        self.refresh_interval = refresh_interval
        self._wrapper = _Wrapper(identity)
        self._opened: dict[int, KeyGeneration] = {}
        self._lock = threading.Lock()
        self._forced_after = -math.inf
        now = clock()
        store.add_server_keys(
            signing_kid=identity.signing_key.kid,
            encryption_kid=identity.decryption_key.kid,
            wrap=lambda g: self._wrapper.wrap(
                g, identity.signing_key, identity.decryption_key, random
            ),
            now=now,
            retire_at=None,
            only_if_empty=True,
        )
        self._snap = self._load(now)

    # -- reading ------------------------------------------------------------------------
    def _load(self, now: float) -> _Snapshot:
        generations = []
        for row in self.store.list_server_keys():
            known = self._opened.get(row.generation)
            if known is None or known.retires_at != row.retires_at:
                known = self._wrapper.unwrap(row)
                self._opened[row.generation] = known
            generations.append(known)
        if not generations:  # pragma: no cover - the constructor adds generation 1
            raise ConfigurationError("the store holds no server message keys")
        live = [g for g in generations if g.live(now)]
        # Re-read at the next retirement too, so a retired key is dropped on time.
        ends = [g.retires_at for g in live if g.retires_at is not None]
        due = min([now + self.refresh_interval, *ends])
        return _Snapshot(
            generations=tuple(generations),
            by_encryption_kid={g.decryption.kid: g for g in generations},
            decryption_keys={g.decryption.kid: g.decryption for g in live},
            due=due if math.isfinite(due) else now + self.refresh_interval,
        )

    def refresh(self, now: float, *, force: bool = True) -> None:
        """Re-read the generations from the store (another replica or the CLI rotated).

        ``force=False`` is the periodic refresh: every thread (and every MQTT uplink in
        flight) sees the snapshot fall due at once, and only the first re-reads."""
        with self._lock:
            if not force and now < self._snap.due:
                return
            self._snap = self._load(now)

    def may_refresh_for(self, token: bytes, now: float) -> bool:
        """Whether :meth:`refresh_for` would re-read the store for ``token`` (cheap)."""
        kid = recipient_kid(token)
        return (
            kid is not None
            and kid not in self._snap.decryption_keys
            and (now >= self._forced_after)
        )

    def refresh_for(self, token: bytes, now: float) -> bool:
        """Re-read the store for a token sealed to a key this replica does not know:
        another replica may have learnt of a rotation first and told the device. At
        most once a second, so made-up key ids cannot turn into a query flood. True
        when the key is known now (worth opening the token again)."""
        kid = recipient_kid(token)
        if kid is None or kid in self._snap.decryption_keys:
            return False
        with self._lock:
            if now < self._forced_after:
                return False
            self._forced_after = now + 1.0
        self.refresh(now)
        return kid in self._snap.decryption_keys

    def due(self, now: float) -> bool:
        return now >= self._snap.due

    @property
    def current(self) -> KeyGeneration:
        return self._snap.generations[-1]

    @property
    def decryption_keys(self) -> Mapping[str, DecryptionKey]:
        return self._snap.decryption_keys

    def generations(self) -> tuple[KeyGeneration, ...]:
        return self._snap.generations

    def sealed_to(self, token: bytes) -> KeyGeneration:
        """The generation an opened ``token`` was sealed to (the current one if only
        one generation is live, without parsing anything)."""
        snap = self._snap
        if len(snap.decryption_keys) == 1:
            return snap.generations[-1]
        kid = recipient_kid(token)
        found = snap.by_encryption_kid.get(kid) if kid is not None else None
        return found if found is not None else snap.generations[-1]

    def jwk_set(self, now: float) -> dict[str, Any]:
        """RFC 7517 §5 JWK Set: current keys first, then the live older ones, then the
        token key (enrolment first tokens and login access tokens) if not among them.
        ``hatchway_retires_at`` (a JWK Set member readers ignore, §5) says when each
        retiring key stops working."""
        live = [g for g in reversed(self._snap.generations) if g.live(now)]
        keys: list[dict[str, Any]] = []
        retiring: dict[str, int] = {}
        for g in live:
            keys += [g.signing.public().to_jwk(), g.decryption.public().to_jwk()]
            if g.retires_at is not None:
                retiring[g.signing.kid] = retiring[g.decryption.kid] = int(g.retires_at)
        token_key = self.identity.signing_key.public().to_jwk()
        if all(k["kid"] != token_key["kid"] for k in keys):
            keys.append(token_key)
        out: dict[str, Any] = {"keys": keys}
        if retiring:
            out["hatchway_retires_at"] = retiring
        return out


def rotate_server_keys(
    store: Store, identity: ServerIdentity, *, now: float, overlap: float, random: Random
) -> int:
    """Add the next generation; the live ones retire ``overlap`` seconds from ``now``.

    Returns the new generation number.
    """
    if not 0 <= overlap <= 10 * 365 * 86400:
        raise ValueError("the overlap must be between 0 seconds and 10 years")
    signing = generate_signing_key(SignAlg.ES256)
    decryption = generate_decryption_key("P-256")
    wrapper = _Wrapper(identity)
    generation = store.add_server_keys(
        signing_kid=signing.kid,
        encryption_kid=decryption.kid,
        wrap=lambda g: wrapper.wrap(g, signing, decryption, random),
        now=now,
        retire_at=now + overlap,
    )
    assert generation is not None  # noqa: S101 - only_if_empty is off
    return generation
