"""Key rotation, device side (issue 9 "Key rotation", docs/key-rotation.md).

Rotating the device's keys follows enrolment's rule: the new private keys are written
to the state file (``extra.key_rotation``, atomically) *before* anything is sent, with
the message id and the proof. A device that crashes anywhere in between resumes the
same rotation (same ``mid``, same keys) and the server answers it with the same
certificate; the keys swap in the state file only once that answer is checked.

The server's new keys arrive in a ``SERVER_KEYS`` reply, signed by the key the device
already trusts; the device then saves them (atomically) and seals to them from then on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hatchway.device.state import StateFile
from hatchway.errors import InvalidMessage
from hatchway.msgsec import (
    DecryptionKey,
    Message,
    SigningKey,
    generate_decryption_key,
    generate_signing_key,
)
from hatchway.msgsec.rotation import make_proof, parse_server_keys
from hatchway.runtime import Random

__all__ = ["PendingRotation", "apply_server_keys", "begin_rotation", "finish_rotation"]

#: The ``extra`` member of the state file that holds a rotation in progress.
PENDING_KEY = "key_rotation"


@dataclass(frozen=True, slots=True)
class PendingRotation:
    """A rotation saved before it was sent: its message id, new keys and proof."""

    mid: str
    signing: SigningKey
    decryption: DecryptionKey
    proof: str

    def body(self) -> dict[str, Any]:
        """The ``KEY_ROTATE`` body: public halves only."""
        return {
            "mid": self.mid,
            "signing_key": self.signing.public().to_jwk(),
            "encryption_key": self.decryption.public().to_jwk(),
            "proof": self.proof,
        }

    @classmethod
    def load(cls, state: StateFile) -> PendingRotation | None:
        data = state.state.extra.get(PENDING_KEY)
        if data is None:
            return None
        return cls(
            mid=str(data["mid"]),
            signing=SigningKey.from_jwk(data["signing_key"]),
            decryption=DecryptionKey.from_jwk(data["encryption_key"]),
            proof=str(data["proof"]),
        )


def begin_rotation(
    state: StateFile, signing: SigningKey, decryption: DecryptionKey, random: Random
) -> PendingRotation:
    """Make the new keys (same algorithms) and save them, pending, before any send."""
    new_signing = generate_signing_key(signing.alg)
    new_decryption = generate_decryption_key(decryption.crv)
    mid = uuid.UUID(bytes=random(16)).hex
    proof = make_proof(
        new_signing,
        new_decryption.public(),
        device_id=state.state.device_id,
        server_id=state.state.server_id,
        old_kid=signing.kid,
        mid=mid,
    )
    pending = {
        "mid": mid,
        "signing_key": new_signing.to_jwk(private=True),
        "encryption_key": new_decryption.to_jwk(private=True),
        "proof": proof,
    }
    state.update(extra={**state.state.extra, PENDING_KEY: pending})
    state.save()
    return PendingRotation(mid, new_signing, new_decryption, proof)


def finish_rotation(state: StateFile, pending: PendingRotation, reply: Message) -> None:
    """Check the ``KEY_ROTATED`` reply and swap the keys in the state file (atomically).

    The certificate must be issued by the CA from enrolment and certify the new
    signing key; the kids must be the new keys'. Raises ``InvalidMessage``.
    """
    body = reply.body
    if body["signing_kid"] != pending.signing.kid or (
        body["encryption_kid"] != pending.decryption.kid
    ):
        raise InvalidMessage("rotation reply names other keys")
    pem = str(body["certificate"])
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        ca_pem = state.state.ca_certificate
        if ca_pem:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise InvalidMessage(f"rotation reply certificate rejected: {exc}") from None
    mine = pending.signing.public().key.public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    if cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != mine:
        raise InvalidMessage("rotation reply certificate is not for the new key")
    extra = {k: v for k, v in state.state.extra.items() if k != PENDING_KEY}
    state.update(
        signing_key=pending.signing.to_jwk(private=True),
        encryption_key=pending.decryption.to_jwk(private=True),
        device_certificate=pem,
        extra=extra,
    )
    state.save()


def apply_server_keys(state: StateFile, notice: Message) -> dict[str, Any]:
    """Save the server keys a ``SERVER_KEYS`` reply announced; returns the new JWK set."""
    keys = parse_server_keys(notice.body)
    server_keys = {"keys": [keys.signing.to_jwk(), keys.encryption.to_jwk()]}
    state.update(server_keys=server_keys)
    state.save()
    return server_keys
