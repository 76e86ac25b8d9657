"""Device side of enrolment over TLS (US 11,546,310 B2 claim steps 1–4).

Discovery, then credential -> first token, then keys + proof of possession -> device
certificate and server keys. The TLS client is closed when this returns: everything
after it travels as sealed messages.

The secret is spent, and the keys bound to the device, by the server. So before the
first request the state path is checked and locked, and the private keys are written
there as a pending enrolment (atomically, 0600); the lock is held until the complete
state replaces it. A bad ``--state`` (missing directory, another device's state file,
a file another process holds) is refused with nothing sent, and an interrupted
enrolment leaves its keys behind; run again, it resumes with them (issue 7 part 2
item 3).
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws

from hatchway import strictjson
from hatchway.device.firmware.identity import FirmwareIdentity, trust_from_enrolment
from hatchway.device.revoked import REVOKED
from hatchway.device.state import (
    FORMAT,
    PENDING,
    DeviceState,
    PendingEnrolment,
    StateFile,
    acquire_lock,
    release_lock,
)
from hatchway.errors import ConfigurationError, HatchwayError
from hatchway.msgsec import (
    DecryptionKey,
    KeyAlg,
    SignAlg,
    SigningKey,
    generate_decryption_key,
    generate_signing_key,
)
from hatchway.tokens import eddsa_allowed, import_jwk

PROOF_TYP = "hatchway-pop+jwt"
METADATA_PATH = "/.well-known/oauth-authorization-server"


class EnrolmentError(HatchwayError):
    """Enrolment failed; the message says what to do about it."""


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def enroll(
    *,
    server: str,
    device_id: str,
    secret: str,
    state_path: Path,
    ca_file: Path | None,
    sign_alg: SignAlg = SignAlg.ES256,
    enc_curve: str = "P-256",
    key_alg: KeyAlg = KeyAlg.ECDH_ES,
    timeout: float = 15.0,
    firmware: FirmwareIdentity | None = None,
) -> StateFile:
    """Enrol and save the state. ``firmware``: the device's class and installed
    version/sequence; keys in its ``trust`` are pinned (the server's list is then
    ignored), else the trust is the answer's ``"firmware": {"keys": [...]}``."""
    server = server.rstrip("/")
    firmware = firmware or FirmwareIdentity()
    # Nothing is sent before the path is locked and the keys are on disk.
    lock = acquire_lock(state_path)
    try:
        pending = _pending(state_path, device_id, server, sign_alg, enc_curve)
        pending.save(state_path)
        signing = SigningKey.from_jwk(pending.signing_key)
        decryption = DecryptionKey.from_jwk(pending.encryption_key)
        try:
            result = _exchange(
                server, device_id, secret, signing, decryption, key_alg, ca_file, timeout
            )
        except EnrolmentError as exc:
            raise EnrolmentError(
                f"{exc}; the device keys are kept in {state_path} (pending enrolment): "
                "run enroll again with it to resume (with a new secret from 'hatchway device "
                "provision --force' if this one was spent)"
            ) from None
        state = DeviceState(
            device_id=device_id,
            server_id=str(result["server_id"]),
            signing_key=pending.signing_key,
            encryption_key=pending.encryption_key,
            suite=dict(result["suite"]),
            server_keys=dict(result["server_keys"]),
            endpoints=dict(result["endpoints"]),
            device_certificate=str(result["device_certificate"]),
            ca_certificate=str(result["ca_certificate"]),
            firmware=_firmware(firmware, result).to_json(),
        )
        state_file = StateFile(state_path, state, lock=lock)
    except BaseException:
        release_lock(lock)
        raise
    try:
        state_file.save()  # replaces the pending enrolment atomically
    except BaseException:
        state_file.close()  # the pending enrolment, with the keys, is still there
        raise
    return state_file


def _firmware(position: FirmwareIdentity, answer: dict[str, Any]) -> FirmwareIdentity:
    pinned = [entry.key for entry in position.trust]
    now = int(time.time())  # only the keys' "added" stamp, informational
    return replace(position, trust=trust_from_enrolment(answer, now, pinned=pinned))


def _exchange(
    server: str,
    device_id: str,
    secret: str,
    signing: SigningKey,
    decryption: DecryptionKey,
    key_alg: KeyAlg,
    ca_file: Path | None,
    timeout: float,
) -> dict[str, Any]:
    """Steps 1–3 over TLS; returns the key exchange's answer.

    Leaving the ``with`` block closes the TLS connection: claim step 4.
    """
    with httpx.Client(verify=tls_context(ca_file), timeout=timeout) as client:
        meta = _get_json(client, server + METADATA_PATH)
        token_url = _endpoint(meta, "hatchway_enrolment_token_endpoint")
        keys_url = _endpoint(meta, "hatchway_enrolment_keys_endpoint")
        first = _post_json(client, token_url, {"device_id": device_id, "secret": secret})
        proof = _proof(signing, decryption, device_id, str(meta["issuer"]), str(first["challenge"]))
        return _post_json(
            client,
            keys_url,
            {
                "signing_key": signing.public().to_jwk(),
                "encryption_key": decryption.public().to_jwk(),
                "key_alg": key_alg.value,
                "proof": proof,
            },
            bearer=str(first["first_token"]),
        )


def _pending(
    path: Path, device_id: str, server: str, sign_alg: SignAlg, enc_curve: str
) -> PendingEnrolment:
    """The keys to enrol with: a resumed pending enrolment's, or new ones.

    Called with the path locked. Any other content of ``path`` is refused, never
    overwritten: it may hold the only copy of some device's private keys.
    """
    existing = _read_existing(path)
    # A revoked device's tombstone holds no key: a new enrolment may replace it.
    if existing is None or REVOKED in existing:
        return PendingEnrolment(
            device_id=device_id,
            server=server,
            signing_key=generate_signing_key(sign_alg).to_jwk(private=True),
            encryption_key=generate_decryption_key(enc_curve).to_jwk(private=True),
        )
    owner = existing.get("device_id")
    if existing.get("enrolment") != PENDING:
        whose = "this device's" if owner == device_id else f"device {owner!r}'s"
        raise ConfigurationError(
            f"{path} already holds {whose} enrolled state (its private keys); refusing to "
            "overwrite it. Choose another --state file, or move that one away first"
        )
    if owner != device_id:
        raise ConfigurationError(
            f"{path} holds the pending enrolment of device {owner!r}; refusing to overwrite "
            "its keys. Choose another --state file"
        )
    try:
        pending = PendingEnrolment.from_json(existing)
        signing = SigningKey.from_jwk(pending.signing_key)
        decryption = DecryptionKey.from_jwk(pending.encryption_key)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{path} holds a damaged pending enrolment: {exc}") from None
    if (signing.alg, decryption.crv) != (sign_alg, enc_curve):
        raise ConfigurationError(
            f"{path} holds a pending enrolment with {signing.alg.value} and "
            f"{decryption.crv} keys; resume it with --sign-alg {signing.alg.value} "
            f"--enc-curve {decryption.crv}, or move it away to start afresh"
        )
    # The keys never left this file, so they are as good as new ones for any server.
    return PendingEnrolment(
        device_id=device_id,
        server=server,
        signing_key=pending.signing_key,
        encryption_key=pending.encryption_key,
    )


def _read_existing(path: Path) -> dict[str, Any] | None:
    """What ``path`` holds: ``None`` when absent or empty, else a state file's JSON."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip():
        return None  # e.g. made by mktemp: nothing to lose
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(
            f"{path} exists and is not a device state file; refusing to overwrite it"
        )
    return data


def _proof(
    signing: SigningKey, decryption: DecryptionKey, device_id: str, issuer: str, nonce: str
) -> str:
    payload = {"iss": device_id, "aud": issuer, "nonce": nonce, "enc_kid": decryption.kid}
    header = {"alg": signing.alg.value, "typ": PROOF_TYP, "kid": signing.kid}
    with eddsa_allowed():
        key = import_jwk(signing.to_jwk(private=True))
        return jws.serialize_compact(
            header, json.dumps(payload), key, algorithms=[signing.alg.value]
        )


def _endpoint(meta: dict[str, Any], name: str) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or not value.startswith("https://"):
        raise EnrolmentError(f"server metadata lacks an https {name}")
    return value


def _get_json(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise EnrolmentError(f"cannot reach {url}: {exc}") from exc
    return _decode(response)


def _post_json(
    client: httpx.Client, url: str, body: dict[str, Any], *, bearer: str | None = None
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    try:
        response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise EnrolmentError(f"cannot reach {url}: {exc}") from exc
    return _decode(response)


def _decode(response: httpx.Response) -> dict[str, Any]:
    try:
        data = strictjson.loads(response.content)
    except strictjson.JsonError:
        raise EnrolmentError(
            f"{response.url} answered HTTP {response.status_code}, not JSON"
        ) from None
    if response.status_code != 200:
        code = data.get("error", "error") if isinstance(data, dict) else "error"
        text = data.get("error_description", "") if isinstance(data, dict) else ""
        raise EnrolmentError(f"enrolment refused: {code}" + (f" ({text})" if text else ""))
    if not isinstance(data, dict):
        raise EnrolmentError(f"{response.url} answered with a non-object")
    return data
