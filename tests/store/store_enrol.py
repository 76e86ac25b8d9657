"""Enrol a provisioned device in the store with throwaway key material (test helper)."""

from __future__ import annotations

from hatchway.store import Store


def enrol_device(store: Store, device_id: str, *, now: float = 1500.0) -> None:
    """Take a provisioned device through enrolment, with throwaway key material."""
    store.consume_enrolment_secret(device_id, now=now)
    store.complete_enrolment(
        device_id,
        signing_jwk={
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "sig-" + device_id,
            "kid": "k-" + device_id,
        },
        encryption_jwk={"kty": "OKP", "crv": "X25519", "x": "enc-" + device_id},
        suite={"sign": "EdDSA", "key": "ECDH-ES", "enc": "A256GCM"},
        certificate_pem="-----BEGIN CERTIFICATE-----\n...",
        now=now,
    )
