"""Key rotation over the sealed channel: the proof of possession and the body parsers.

docs/key-rotation.md. A device rotating its keys sends ``KEY_ROTATE`` sealed and
signed with its *current* keys. The body carries the new public signing and
encryption JWKs (RFC 7517) and ``proof``: a compact JWS (RFC 7515) signed by the
*new* signing key whose claims name the device, the server, the old key id, both new
key ids (RFC 7638 thumbprints) and the message's ``mid``. So the old key vouches for
the new one (it signs the message) and the new one proves it is held (it signs the
proof), and the proof is bound to one rotation: it cannot be replayed into another.

The server announces its own new keys in ``SERVER_KEYS``, signed by the key the
device already trusts. Both parsers are strict (closed member sets, thumbprint kids,
the device's pinned algorithms: no downgrade) and raise only ``InvalidMessage``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hatchway.errors import InvalidMessage
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import CodecError, b64d, dumps, loads_object
from hatchway.msgsec.keys import EncryptionKey, SigningKey, VerifyingKey, thumbprint

__all__ = [
    "PROOF_TYP",
    "RotateRequest",
    "ServerKeysNotice",
    "make_proof",
    "parse_rotate",
    "parse_server_keys",
    "recipient_kid",
    "server_keys_body",
]

PROOF_TYP = "hatchway-rotate-pop+jwt"
MAX_PROOF = 4096
_PROOF_CLAIMS = frozenset({"iss", "aud", "old_kid", "sig_kid", "enc_kid", "jti"})


@dataclass(frozen=True, slots=True)
class RotateRequest:
    """A checked ``KEY_ROTATE`` body: the device's new public keys."""

    mid: str
    signing: VerifyingKey
    encryption: EncryptionKey
    old_kid: str


@dataclass(frozen=True, slots=True)
class ServerKeysNotice:
    """A checked ``SERVER_KEYS`` body: the server's new keys and the old ones' end."""

    signing: VerifyingKey
    encryption: EncryptionKey
    retires_at: int


def _claims(
    device_id: str, server_id: str, old_kid: str, sig: str, enc: str, mid: str
) -> dict[str, str]:
    return {
        "iss": device_id,
        "aud": server_id,
        "old_kid": old_kid,
        "sig_kid": sig,
        "enc_kid": enc,
        "jti": mid,
    }


def make_proof(
    new_signing: SigningKey,
    new_encryption: EncryptionKey,
    *,
    device_id: str,
    server_id: str,
    old_kid: str,
    mid: str,
) -> str:
    """The JWS by the new signing key over this one rotation (device side)."""
    claims = _claims(device_id, server_id, old_kid, new_signing.kid, new_encryption.kid, mid)
    header = {"alg": new_signing.alg.value, "kid": new_signing.kid, "typ": PROOF_TYP}
    return _jose.jws_encode(header, dumps(claims), new_signing.key).decode("ascii")


def _own_thumbprint(key: VerifyingKey | EncryptionKey) -> None:
    # As at enrolment: a kid is its key's thumbprint, so nobody can claim a kid
    # that names (or will name) another device's key.
    if not hmac.compare_digest(key.kid.encode(), thumbprint(key.key).encode()):
        raise InvalidMessage(reason="rotate: key id is not the JWK thumbprint")


def parse_rotate(
    body: Mapping[str, Any],
    *,
    device_id: str,
    server_id: str,
    current: VerifyingKey,
    current_encryption: EncryptionKey,
) -> RotateRequest:
    """Check a ``KEY_ROTATE`` body sent under ``current``; raises ``InvalidMessage``.

    The new keys keep the algorithm and curve of the current ones (a rotation is no
    way to change the pinned suite), differ from them, and the proof verifies under
    the new signing key with exactly the claims this rotation implies.
    """
    try:
        signing = VerifyingKey.from_jwk(body["signing_key"])
        encryption = EncryptionKey.from_jwk(body["encryption_key"])
        mid, proof = body["mid"], body["proof"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(reason=f"rotate: bad keys: {exc}") from None
    if not isinstance(mid, str) or not isinstance(proof, str) or len(proof) > MAX_PROOF:
        raise InvalidMessage(reason="rotate: mid or proof missing or oversized")
    _own_thumbprint(signing)
    _own_thumbprint(encryption)
    if signing.alg is not current.alg or encryption.crv != current_encryption.crv:
        raise InvalidMessage(reason="rotate: new keys must keep the pinned algorithms")
    if signing.kid == current.kid or encryption.kid == current_encryption.kid:
        raise InvalidMessage(reason="rotate: new keys equal the current ones")
    expected = _claims(device_id, server_id, current.kid, signing.kid, encryption.kid, mid)
    try:
        jws = _jose.jws_parse(proof.encode("ascii"))
        header = jws.header
        if header.get("alg") != signing.alg.value or header.get("typ") != PROOF_TYP:
            raise InvalidMessage(reason="rotate: proof alg/typ")
        if header.get("kid") != signing.kid:
            raise InvalidMessage(reason="rotate: proof not by the new signing key")
        _jose.verify(signing.alg.value, signing.key, jws.signing_input, jws.signature)
        claims = loads_object(jws.payload)
    except InvalidMessage:
        raise
    except (_jose.JoseError, CodecError, UnicodeEncodeError) as exc:
        raise InvalidMessage(reason=f"rotate: proof rejected: {exc}") from None
    if claims.keys() != _PROOF_CLAIMS or not all(
        isinstance(claims[k], str) and hmac.compare_digest(claims[k].encode(), expected[k].encode())
        for k in _PROOF_CLAIMS
    ):
        raise InvalidMessage(reason="rotate: proof does not name this rotation")
    return RotateRequest(mid=mid, signing=signing, encryption=encryption, old_kid=current.kid)


def server_keys_body(
    signing: VerifyingKey, encryption: EncryptionKey, *, retires_at: int, status: str
) -> dict[str, Any]:
    """The ``SERVER_KEYS`` body the server seals (public halves only)."""
    return {
        "server_keys": {"keys": [signing.to_jwk(), encryption.to_jwk()]},
        "retires_at": retires_at,
        "status": status,
    }


def parse_server_keys(body: Mapping[str, Any]) -> ServerKeysNotice:
    """Check a ``SERVER_KEYS`` body: one signing and one encryption key, nothing else."""
    keys = body.get("server_keys")
    retires_at = body.get("retires_at")
    if not isinstance(keys, dict) or set(keys) != {"keys"} or not isinstance(keys["keys"], list):
        raise InvalidMessage(reason="server keys: not a JWK set")
    if not isinstance(retires_at, int) or isinstance(retires_at, bool):
        raise InvalidMessage(reason="server keys: retires_at is not an integer")
    members = keys["keys"]
    if len(members) != 2 or not all(isinstance(m, dict) for m in members):
        raise InvalidMessage(reason="server keys: exactly one signing and one encryption key")
    by_use = {m.get("use"): m for m in members}
    try:
        signing = VerifyingKey.from_jwk(by_use["sig"])
        encryption = EncryptionKey.from_jwk(by_use["enc"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(reason=f"server keys: {exc}") from None
    _own_thumbprint(signing)
    _own_thumbprint(encryption)
    return ServerKeysNotice(signing=signing, encryption=encryption, retires_at=retires_at)


def recipient_kid(token: bytes) -> str | None:
    """The ``kid`` in a compact JWE's protected header (the key it was sealed to).

    Only meaningful once ``open_message`` has accepted the token: the protected
    header is the AEAD's additional data, so it is authenticated then.
    """
    head = token.split(b".", 1)[0]
    try:
        kid = loads_object(b64d(head)).get("kid")
    except CodecError:
        return None
    return kid if isinstance(kid, str) else None
