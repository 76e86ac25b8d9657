"""Device enrolment over TLS: US 11,546,310 B2 claim steps 1–4.

1. The operator provisions a device id; its one-time secret is stored only as a hash.
2. Over TLS the device presents id + secret and receives a *first token*: a server-signed
   JWT, single-use, valid for at most five minutes and only for the key exchange. It
   carries a server-chosen challenge (``nonce``).
3. With that token the device sends its public signing and encryption keys and a proof of
   possession: a JWS over the challenge, signed by the signing key, that also names the
   encryption key's thumbprint so the two keys are bound together. In return it gets a
   device certificate, the server's message keys, its pinned algorithms and endpoints.
4. The device closes TLS; the credential is never used again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import JoseError

from hatchway import strictjson
from hatchway.config import Settings
from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows.firmware import firmware_keys
from hatchway.flows.keyring import ServerKeyring
from hatchway.mqtt.discovery import enrolment_endpoints
from hatchway.msgsec import (
    EncryptionKey,
    KeyAlg,
    SignAlg,
    Suite,
    VerifyingKey,
    jwk_set,
    thumbprint,
)
from hatchway.pki.crl import CRL_PATH
from hatchway.runtime import Clock, Random
from hatchway.server.datadir import ServerIdentity
from hatchway.store import DeviceExists, DeviceStatus, SecretAlreadyUsed, Store, UnknownDevice
from hatchway.tokens import eddsa_allowed, import_jwk, sign_jwt, verify_jwt

log = logging.getLogger("hatchway.enrolment")

FIRST_TOKEN_TYP = "hatchway-enrol+jwt"  # noqa: S105 - a JOSE typ, not a secret
PROOF_TYP = "hatchway-pop+jwt"
KEYS_PATH = "/enrol/keys"
TOKEN_PATH = "/enrol/token"  # noqa: S105 - a URL path
MESSAGE_PATH = "/m"
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class EnrolmentRejected(HatchwayError):
    """Uniform refusal of an enrolment step; ``reason`` is for the server log only."""

    def __init__(self, public: str, reason: str) -> None:
        super().__init__(public)
        self.public = public
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FirstToken:
    token: str
    expires_in: int
    challenge: str


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(
            "device id must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return device_id


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class EnrolmentService:
    def __init__(
        self,
        *,
        store: Store,
        identity: ServerIdentity,
        settings: Settings,
        clock: Clock,
        random: Random,
        keyring: ServerKeyring | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        #: The server's message-key generations; new devices get the current one.
        self.keyring = keyring
        self.settings = settings
        self.clock = clock
        self.random = random
        self._signing_jwk = identity.signing_key.to_jwk(private=True)
        self._verifying_jwk = identity.signing_key.public().to_jwk()

    # -- operator -----------------------------------------------------------------------
    def provision(self, device_id: str, *, force: bool = False) -> str:
        """Create (or with ``force`` reset) a device and return its one-time secret."""
        check_device_id(device_id)
        secret = _b64(self.random(32))
        now = self.clock()
        try:
            self.store.provision_device(device_id, hash_secret(secret), now=now)
        except DeviceExists:
            if not force:
                raise
            self.store.reprovision_device(device_id, hash_secret(secret), now=now)
        return secret

    # -- step 2: credential -> first token ---------------------------------------------
    def issue_first_token(self, device_id: object, secret: object) -> FirstToken:
        if not isinstance(device_id, str) or not isinstance(secret, str):
            raise EnrolmentRejected("invalid_request", "device_id and secret must be strings")
        record = self.store.get_device(device_id) if DEVICE_ID_RE.fullmatch(device_id) else None
        # Hash and compare even for an unknown device so timing does not reveal which ids exist.
        stored = record.secret_hash if record else hash_secret(_b64(self.random(32)))
        if not hmac.compare_digest(stored.encode(), hash_secret(secret).encode()) or not record:
            raise EnrolmentRejected("invalid_grant", f"bad credential for {_short(device_id)}")
        if record.status is DeviceStatus.REVOKED:
            # Same public answer as a spent secret; only `provision --force` lifts it.
            raise EnrolmentRejected("invalid_grant", f"device {_short(device_id)} is revoked")
        now = self.clock()
        try:
            self.store.consume_enrolment_secret(device_id, now=now)
        except (SecretAlreadyUsed, UnknownDevice):
            raise EnrolmentRejected(
                "invalid_grant", f"secret already used for {_short(device_id)}"
            ) from None
        challenge = _b64(self.random(32))
        ttl = self.settings.first_token_ttl
        claims = {
            "iss": self.settings.issuer,
            "sub": device_id,
            "aud": self.settings.issuer + KEYS_PATH,
            "scope": "enrol:keys",
            "iat": int(now),
            "exp": int(now) + ttl,
            "jti": _b64(self.random(16)),
            "nonce": challenge,
            # Ties the token to the secret it was issued for: after `provision --force`
            # a token minted with the old (perhaps leaked) secret is worthless.
            "sfp": secret_fingerprint(stored),
        }
        token = sign_jwt(self._signing_jwk, typ=FIRST_TOKEN_TYP, claims=claims)
        log.info("first token issued", extra={"device_id": device_id})
        return FirstToken(token=token, expires_in=ttl, challenge=challenge)

    # -- step 3: exchange keys with the first token -----------------------------------
    def exchange_keys(self, first_token: str, request: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        try:
            claims = verify_jwt(
                first_token,
                self._verifying_jwk,
                typ=FIRST_TOKEN_TYP,
                issuer=self.settings.issuer,
                audience=self.settings.issuer + KEYS_PATH,
                now=now,
                max_lifetime=self.settings.first_token_ttl,
            )
        except InvalidMessage as exc:
            raise EnrolmentRejected("invalid_token", exc.reason) from None
        if claims.get("scope") != "enrol:keys":
            raise EnrolmentRejected("invalid_token", "first token has the wrong scope")
        # Single use: the jti is burnt before anything else is looked at.
        if not self.store.use_token_once(claims["jti"], exp=float(claims["exp"]), now=now):
            raise EnrolmentRejected("invalid_token", "first token replayed")
        device_id = str(claims["sub"])
        record = self.store.get_device(device_id)
        if (
            record is None
            or record.status is not DeviceStatus.PROVISIONED
            or not isinstance(claims.get("sfp"), str)
            or not hmac.compare_digest(
                str(claims["sfp"]).encode(), secret_fingerprint(record.secret_hash).encode()
            )
        ):
            raise EnrolmentRejected("invalid_token", "first token no longer matches the device")
        verifying, encryption, suite = self._parse_keys(request)
        self._check_proof(
            request.get("proof"), verifying, encryption, device_id, claims["nonce"], now
        )

        cert = self.identity.ca.issue_device(
            device_id,
            verifying.key,
            encryption_public_key=encryption.key,
            now=datetime.fromtimestamp(now, UTC),
            crl_uri=self.settings.plain_base_url + CRL_PATH,
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        try:
            self.store.complete_enrolment(
                device_id,
                signing_jwk=verifying.to_jwk(),
                encryption_jwk=encryption.to_jwk(),
                suite=suite.to_json(),
                certificate_pem=cert_pem,
                now=now,
            )
        except HatchwayError as exc:  # key already registered, device reset meanwhile...
            raise EnrolmentRejected("invalid_request", f"enrolment refused: {exc!r}") from None
        log.info("device enrolled", extra={"device_id": device_id})
        return {
            "device_id": device_id,
            "server_id": self.settings.issuer,
            "device_certificate": cert_pem,
            "ca_certificate": self.identity.ca_cert_path.read_text(),
            "server_keys": self._server_keys(),
            "suite": suite.to_json(),
            "server_suite": {"sign": SignAlg.ES256.value},
            # Issue 9: the device's first firmware trust store (flows/firmware.py).
            "firmware": {"keys": firmware_keys(self.store)},
            "endpoints": {
                "messages": self.settings.plain_base_url + MESSAGE_PATH,
                # Where the CA's CRL is (the certificate names it too).
                "crl": self.settings.plain_base_url + CRL_PATH,
                # The broker and this device's own topics, when MQTT is configured.
                **enrolment_endpoints(self.settings, device_id),
            },
        }

    def _server_keys(self) -> dict[str, Any]:
        if self.keyring is None:
            return jwk_set(
                self.identity.signing_key.public(), self.identity.decryption_key.public()
            )
        current = self.keyring.current
        return jwk_set(current.signing.public(), current.decryption.public())

    def _parse_keys(self, request: dict[str, Any]) -> tuple[VerifyingKey, EncryptionKey, Suite]:
        try:
            verifying = VerifyingKey.from_jwk(request["signing_key"])
            encryption = EncryptionKey.from_jwk(request["encryption_key"])
            key_alg = KeyAlg(request.get("key_alg", KeyAlg.ECDH_ES.value))
        except (KeyError, TypeError, ValueError, InvalidMessage) as exc:
            raise EnrolmentRejected("invalid_request", f"bad device keys: {exc}") from None
        if (
            any(k in request["signing_key"] for k in ("d", "p", "q"))
            or "d" in request["encryption_key"]
        ):
            raise EnrolmentRejected("invalid_request", "private key material sent")
        # The key ids must be each key's own RFC 7638 thumbprint, recomputed here: no
        # device can claim a kid that names (or will name) another device's key.
        for key in (verifying, encryption):
            if not hmac.compare_digest(key.kid.encode(), thumbprint(key.key).encode()):
                raise EnrolmentRejected("invalid_request", "key id is not the JWK thumbprint")
        return verifying, encryption, Suite(sign=verifying.alg, key=key_alg)

    def _check_proof(
        self,
        proof: object,
        verifying: VerifyingKey,
        encryption: EncryptionKey,
        device_id: str,
        nonce: str,
        now: float,
    ) -> None:
        if not isinstance(proof, str) or len(proof) > 4096:
            raise EnrolmentRejected("invalid_request", "proof of possession missing")
        alg = verifying.alg.value
        try:
            with eddsa_allowed():
                key = import_jwk(verifying.to_jwk())
                obj = jws.deserialize_compact(proof, key, algorithms=[alg])
            payload = strictjson.loads(obj.payload)
        except (JoseError, ValueError, TypeError, RecursionError, InvalidMessage) as exc:
            raise EnrolmentRejected("invalid_proof", f"proof rejected: {exc!r}") from None
        ok = (
            obj.headers().get("typ") == PROOF_TYP
            and isinstance(payload, dict)
            and payload.get("iss") == device_id
            and payload.get("aud") == self.settings.issuer
            and isinstance(payload.get("nonce"), str)
            and hmac.compare_digest(str(payload["nonce"]).encode(), nonce.encode())
            and payload.get("enc_kid") == encryption.kid
        )
        if not ok:
            raise EnrolmentRejected("invalid_proof", "proof does not match challenge or keys")


def secret_fingerprint(secret_hash: str) -> str:
    """A short digest of the stored secret hash: names *which* secret, reveals nothing."""
    return _b64(hashlib.sha256(b"hatchway-sfp\0" + secret_hash.encode()).digest()[:16])


def _short(device_id: str) -> str:
    # Only a bounded, repr-escaped prefix of attacker-chosen text reaches the log.
    return repr(device_id[:64]) + ("..." if len(device_id) > 64 else "")
