"""Device side of enrolment over TLS (US 11,546,310 B2 claim steps 1–4).

Discovery, then credential -> first token, then keys + proof of possession -> device
certificate and server keys. The TLS client is closed when this returns: everything
after it travels as sealed messages.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws

from hatchway import strictjson
from hatchway.device.state import DeviceState, StateFile
from hatchway.errors import HatchwayError
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
) -> StateFile:
    server = server.rstrip("/")
    signing = generate_signing_key(sign_alg)
    decryption = generate_decryption_key(enc_curve)
    with httpx.Client(verify=tls_context(ca_file), timeout=timeout) as client:
        meta = _get_json(client, server + METADATA_PATH)
        token_url = _endpoint(meta, "hatchway_enrolment_token_endpoint")
        keys_url = _endpoint(meta, "hatchway_enrolment_keys_endpoint")
        first = _post_json(client, token_url, {"device_id": device_id, "secret": secret})
        proof = _proof(signing, decryption, device_id, str(meta["issuer"]), str(first["challenge"]))
        result = _post_json(
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
    # The `with` block has closed the TLS connection: claim step 4.
    state = DeviceState(
        device_id=device_id,
        server_id=str(result["server_id"]),
        signing_key=signing.to_jwk(private=True),
        encryption_key=decryption.to_jwk(private=True),
        suite=dict(result["suite"]),
        server_keys=dict(result["server_keys"]),
        endpoints=dict(result["endpoints"]),
        device_certificate=str(result["device_certificate"]),
        ca_certificate=str(result["ca_certificate"]),
    )
    state_file = StateFile(state_path, state)
    state_file.save()
    return state_file


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
