"""Enrolment (US 11,546,310 B2 claim steps 1–3), attacked: every refusal is clear and final."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hatchway.device.enrol import _proof
from hatchway.flows.enrolment import EnrolmentRejected, FirstToken, check_device_id
from hatchway.msgsec import generate_decryption_key, generate_signing_key
from hatchway.runtime import FrozenClock
from hatchway.server.context import ServerContext
from hatchway.store import DeviceExists, DeviceStatus


def keys_request(
    ctx: ServerContext, first: FirstToken, device_id: str, **override: Any
) -> dict[str, Any]:
    signing, decryption = generate_signing_key(), generate_decryption_key()
    request = {
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": _proof(signing, decryption, device_id, ctx.settings.issuer, first.challenge),
    }
    request.update(override)
    return request


def test_secret_is_stored_only_as_a_hash(ctx: ServerContext) -> None:
    secret = ctx.enrolment.provision("meter-1")
    record = ctx.store.get_device("meter-1")
    assert record is not None and secret not in record.secret_hash
    assert record.secret_hash.startswith("sha256:")


def test_provision_twice_needs_force(ctx: ServerContext) -> None:
    old = ctx.enrolment.provision("meter-1")
    with pytest.raises(DeviceExists):
        ctx.enrolment.provision("meter-1")
    new = ctx.enrolment.provision("meter-1", force=True)
    assert new != old
    with pytest.raises(EnrolmentRejected):
        ctx.enrolment.issue_first_token("meter-1", old)
    ctx.enrolment.issue_first_token("meter-1", new)


@pytest.mark.parametrize("bad", ["", "-x", "a" * 65, "a b", "a/b", "é"])
def test_device_ids_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        check_device_id(bad)


def test_full_enrolment_issues_certificate_keys_and_suite(ctx: ServerContext) -> None:
    secret = ctx.enrolment.provision("meter-1")
    first = ctx.enrolment.issue_first_token("meter-1", secret)
    result = ctx.enrolment.exchange_keys(first.token, keys_request(ctx, first, "meter-1"))
    assert result["device_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert result["suite"] == {"sign": "ES256", "key": "ECDH-ES", "enc": "A256GCM"}
    assert {k["use"] for k in result["server_keys"]["keys"]} == {"sig", "enc"}
    assert result["endpoints"]["messages"].startswith("http://")
    record = ctx.store.get_device("meter-1")
    assert record is not None and record.status is DeviceStatus.ENROLLED


def test_first_token_is_short_lived(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    assert first.expires_in <= 300


@pytest.mark.parametrize("secret", ["wrong", "", "x" * 10_000])
def test_wrong_secret_and_unknown_device_look_the_same(ctx: ServerContext, secret: str) -> None:
    ctx.enrolment.provision("meter-1")
    with pytest.raises(EnrolmentRejected) as known:
        ctx.enrolment.issue_first_token("meter-1", secret)
    with pytest.raises(EnrolmentRejected) as unknown:
        ctx.enrolment.issue_first_token("no-such-device", secret)
    assert known.value.public == unknown.value.public == "invalid_grant"


def test_used_secret_is_refused(ctx: ServerContext) -> None:
    secret = ctx.enrolment.provision("meter-1")
    ctx.enrolment.issue_first_token("meter-1", secret)
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.issue_first_token("meter-1", secret)
    assert refused.value.public == "invalid_grant"


@pytest.mark.parametrize("payload", [(None, "s"), ("meter-1", None), (1, 2), ([], {})])
def test_malformed_credential(ctx: ServerContext, payload: tuple[Any, Any]) -> None:
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.issue_first_token(*payload)
    assert refused.value.public == "invalid_request"


def test_replayed_first_token_is_refused(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    ctx.enrolment.exchange_keys(first.token, keys_request(ctx, first, "meter-1"))
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, keys_request(ctx, first, "meter-1"))
    assert refused.value.public == "invalid_token"


def test_expired_first_token_is_refused(ctx: ServerContext, clock: FrozenClock) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    clock.advance(first.expires_in + 1)
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, keys_request(ctx, first, "meter-1"))
    assert refused.value.public == "invalid_token"


@pytest.mark.parametrize("mutate", ["flip", "truncate", "garbage", "empty"])
def test_tampered_first_token_is_refused(ctx: ServerContext, mutate: str) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    token = first.token
    forged = {
        "flip": token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:],
        "truncate": token[: len(token) // 2],
        "garbage": "not.a.jwt",
        "empty": "",
    }[mutate]
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(forged, keys_request(ctx, first, "meter-1"))
    assert refused.value.public == "invalid_token"


def test_keys_without_proof_are_refused(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    request = keys_request(ctx, first, "meter-1")
    del request["proof"]
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, request)
    assert refused.value.public == "invalid_request"


def test_proof_by_another_key_is_refused(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    other = keys_request(ctx, first, "meter-1")  # a proof made with different keys
    request = keys_request(ctx, first, "meter-1", proof=other["proof"])
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, request)
    assert refused.value.public == "invalid_proof"


def test_proof_over_the_wrong_challenge_is_refused(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    signing, decryption = generate_signing_key(), generate_decryption_key()
    proof = _proof(signing, decryption, "meter-1", ctx.settings.issuer, "some-other-challenge")
    request = {
        "signing_key": signing.public().to_jwk(),
        "encryption_key": decryption.public().to_jwk(),
        "proof": proof,
    }
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, request)
    assert refused.value.public == "invalid_proof"


def test_proof_not_binding_the_encryption_key_is_refused(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    request = keys_request(ctx, first, "meter-1")
    request["encryption_key"] = generate_decryption_key().public().to_jwk()
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, request)
    assert refused.value.public == "invalid_proof"


def test_private_key_material_is_refused(ctx: ServerContext) -> None:
    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    signing = generate_signing_key()
    request = keys_request(ctx, first, "meter-1", signing_key=signing.to_jwk(private=True))
    with pytest.raises(EnrolmentRejected) as refused:
        ctx.enrolment.exchange_keys(first.token, request)
    assert refused.value.public == "invalid_request"


def test_ed25519_and_x25519_are_accepted(ctx: ServerContext, tmp_path: Path) -> None:
    from hatchway.msgsec import SignAlg

    first = ctx.enrolment.issue_first_token("meter-1", ctx.enrolment.provision("meter-1"))
    signing, decryption = generate_signing_key(SignAlg.EDDSA), generate_decryption_key("X25519")
    result = ctx.enrolment.exchange_keys(
        first.token,
        {
            "signing_key": signing.public().to_jwk(),
            "encryption_key": decryption.public().to_jwk(),
            "key_alg": "ECDH-ES+A256KW",
            "proof": _proof(signing, decryption, "meter-1", ctx.settings.issuer, first.challenge),
        },
    )
    assert result["suite"] == {"sign": "EdDSA", "key": "ECDH-ES+A256KW", "enc": "A256GCM"}
