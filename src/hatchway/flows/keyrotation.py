"""Device-key rotation, server side (issue 9 "Key rotation", docs/key-rotation.md).

A ``KEY_ROTATE`` arrives sealed and signed with the device's current keys; its body
(``msgsec.rotation.parse_rotate``) carries the new public keys and a proof by the new
signing key. It is checked before anything is stored, then goes through the replay
window and the message table like any message (so its ``seq`` is consumed and a
replay of it is refused), and only then are the keys swapped: the store installs the
new keys and a certificate re-issued by the dev CA, and records the rotation under
the message's ``mid``, in one transaction.

A retransmission (same ``mid``, after a lost reply or a device crash) finds that
record and gets the same certificate, whether it is signed by the old key (still
accepted until ``retires_at``: the overlap) or by the new one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hatchway.config import Settings
from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.msgsec import EncryptionKey, Message, VerifyingKey
from hatchway.msgsec.rotation import parse_rotate
from hatchway.server.datadir import ServerIdentity
from hatchway.store import DeviceRotation, Store

log = logging.getLogger("hatchway.messages")

__all__ = ["DeviceKeyRotation", "rotated_body"]


class DeviceKeyRotation:
    """Checks and performs device-key rotations for the message service."""

    def __init__(self, *, store: Store, identity: ServerIdentity, settings: Settings) -> None:
        self.store = store
        self.identity = identity
        self.settings = settings

    def precheck(
        self,
        device_id: str,
        message: Message,
        signed_by: VerifyingKey,
        encryption: EncryptionKey,
        *,
        previous: bool,
    ) -> None:
        """Refuse a bad rotation before it is stored; raises ``InvalidMessage``."""
        done = self.store.get_device_rotation(device_id, str(message.body["mid"]))
        if done is not None:
            if signed_by.kid not in (done.old_signing_kid, done.new_signing_kid):
                raise InvalidMessage("rotate retransmission signed by an unrelated key")
            return
        # Only the current key may start a rotation: a key that is already being
        # retired must not be able to fork the device onto keys of its choosing.
        if previous:
            raise InvalidMessage("rotate signed by a retiring key")
        parse_rotate(
            message.body,
            device_id=device_id,
            server_id=self.settings.issuer,
            current=signed_by,
            current_encryption=encryption,
        )

    def rotate(
        self,
        device_id: str,
        message: Message,
        signed_by: VerifyingKey,
        encryption: EncryptionKey,
        now: float,
    ) -> DeviceRotation:
        """The rotation this message asks for: done now, or found done before."""
        mid = str(message.body["mid"])
        done = self.store.get_device_rotation(device_id, mid)
        if done is not None:
            return done
        request = parse_rotate(
            message.body,
            device_id=device_id,
            server_id=self.settings.issuer,
            current=signed_by,
            current_encryption=encryption,
        )
        # The certificate this rotation replaces goes on the CRL as superseded.
        before = self.store.get_device(device_id)
        old_pem = before.certificate_pem if before is not None else None
        superseded = (
            x509.load_pem_x509_certificate(old_pem.encode()).serial_number if old_pem else None
        )
        cert = self.identity.ca.issue_device(
            device_id,
            request.signing.key,
            encryption_public_key=request.encryption.key,
            now=datetime.fromtimestamp(now, UTC),
        )
        try:
            rotation = self.store.rotate_device_keys(
                device_id,
                mid=mid,
                old_signing_kid=signed_by.kid,
                signing_jwk=request.signing.to_jwk(),
                encryption_jwk=request.encryption.to_jwk(),
                certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
                now=now,
                retires_at=now + self.settings.device_key_overlap,
                superseded_serial=superseded,
            )
        except (HatchwayError, ValueError) as exc:
            raise InvalidMessage(f"rotation refused: {type(exc).__name__}: {exc}") from None
        log.info(
            "device keys rotated",
            extra={"device_id": device_id, "kid": rotation.new_signing_kid},
        )
        return rotation


def rotated_body(rotation: DeviceRotation) -> dict[str, Any]:
    """The ``KEY_ROTATED`` reply body."""
    return {
        "certificate": rotation.certificate_pem,
        "signing_kid": rotation.new_signing_kid,
        "encryption_kid": rotation.new_encryption_kid,
        "retires_at": int(rotation.retires_at),
    }
