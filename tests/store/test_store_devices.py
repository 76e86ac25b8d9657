"""Devices: provisioning, one-time secrets, enrolment, single-use tokens."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from hatchway.store import (
    MAX_ID_LENGTH,
    DeviceExists,
    DeviceStatus,
    InvalidTransition,
    KeyIdTaken,
    SecretAlreadyUsed,
    Store,
    UnknownDevice,
)
from hatchway.store.schema import used_tokens

pytest_plugins = ["store_fixtures"]

SIGNING = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
    "kid": "sig-1",
}
ENCRYPTION = {"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}
SUITE = {"sig": "EdDSA", "alg": "ECDH-ES", "enc": "A256GCM"}


def _enrol(
    store: Store, device_id: str, now: float = 2000.0, signing: dict[str, str] = SIGNING
) -> None:
    store.consume_enrolment_secret(device_id, now=now)
    store.complete_enrolment(
        device_id,
        signing_jwk=signing,
        encryption_jwk=ENCRYPTION,
        suite=SUITE,
        certificate_pem="-----BEGIN CERTIFICATE-----\n...",
        now=now,
    )


def test_provision_and_get(store: Store) -> None:
    store.provision_device("dev-a", "argon2-hash", now=1000.5)
    record = store.get_device("dev-a")
    assert record is not None
    assert record.device_id == "dev-a"
    assert record.secret_hash == "argon2-hash"
    assert record.secret_used_at is None
    assert record.status is DeviceStatus.PROVISIONED
    assert record.created_at == 1000.5
    assert (record.signing_jwk, record.enrolled_at, record.certificate_pem) == (None, None, None)
    assert store.get_device("nobody") is None


def test_provision_twice_raises(store: Store, provisioned_device: str) -> None:
    with pytest.raises(DeviceExists):
        store.provision_device(provisioned_device, "other", now=1.0)
    record = store.get_device(provisioned_device)
    assert record is not None and record.secret_hash == "hash-1"


def test_list_devices_oldest_first(store: Store) -> None:
    store.provision_device("b", "h", now=2.0)
    store.provision_device("a", "h", now=3.0)
    store.provision_device("c", "h", now=1.0)
    assert [d.device_id for d in store.list_devices()] == ["c", "b", "a"]


def test_device_id_length_is_checked(store: Store) -> None:
    store.provision_device("x" * MAX_ID_LENGTH, "h", now=1.0)
    with pytest.raises(ValueError, match="at most"):
        store.provision_device("x" * (MAX_ID_LENGTH + 1), "h", now=1.0)
    with pytest.raises(ValueError):
        store.provision_device("", "h", now=1.0)


def test_consume_secret_once(store: Store, provisioned_device: str) -> None:
    record = store.consume_enrolment_secret(provisioned_device, now=1500.0)
    assert record.secret_used_at == 1500.0
    assert record.secret_hash == "hash-1"
    with pytest.raises(SecretAlreadyUsed):
        store.consume_enrolment_secret(provisioned_device, now=1501.0)
    again = store.get_device(provisioned_device)
    assert again is not None and again.secret_used_at == 1500.0


def test_consume_secret_unknown_device(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.consume_enrolment_secret("ghost", now=1.0)


def test_deregistered_device_secret_cannot_be_consumed(
    store: Store, provisioned_device: str
) -> None:
    store.deregister_device(provisioned_device, now=1100.0)
    with pytest.raises(SecretAlreadyUsed):
        store.consume_enrolment_secret(provisioned_device, now=1200.0)


def test_concurrent_consume_has_one_winner(store: Store, provisioned_device: str) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            store.consume_enrolment_secret(provisioned_device, now=1000.0 + i)
            outcome = "won"
        except SecretAlreadyUsed:
            outcome = "lost"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]


def test_complete_enrolment(store: Store, provisioned_device: str) -> None:
    _enrol(store, provisioned_device, now=2000.0)
    record = store.get_device(provisioned_device)
    assert record is not None
    assert record.status is DeviceStatus.ENROLLED
    assert record.signing_jwk == SIGNING
    assert record.encryption_jwk == ENCRYPTION
    assert record.suite == SUITE
    assert record.certificate_pem is not None
    assert record.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert record.enrolled_at == 2000.0


def test_enrolment_needs_consumed_secret(store: Store, provisioned_device: str) -> None:
    with pytest.raises(InvalidTransition, match="not consumed"):
        store.complete_enrolment(
            provisioned_device,
            signing_jwk=SIGNING,
            encryption_jwk=ENCRYPTION,
            suite=SUITE,
            certificate_pem="pem",
            now=1.0,
        )
    record = store.get_device(provisioned_device)
    assert record is not None and record.status is DeviceStatus.PROVISIONED


def test_enrolment_is_not_repeatable(store: Store, provisioned_device: str) -> None:
    _enrol(store, provisioned_device)
    with pytest.raises(InvalidTransition, match="enrolled -> enrolled"):
        store.complete_enrolment(
            provisioned_device,
            signing_jwk={"kty": "EC"},
            encryption_jwk=ENCRYPTION,
            suite=SUITE,
            certificate_pem="pem",
            now=3000.0,
        )
    record = store.get_device(provisioned_device)
    assert record is not None and record.signing_jwk == SIGNING


def test_complete_enrolment_unknown_device(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.complete_enrolment(
            "ghost", signing_jwk={}, encryption_jwk={}, suite={}, certificate_pem="", now=1.0
        )


def test_deregister(store: Store, provisioned_device: str) -> None:
    _enrol(store, provisioned_device)
    store.deregister_device(provisioned_device, now=5000.0)
    record = store.get_device(provisioned_device)
    assert record is not None
    assert record.status is DeviceStatus.DEREGISTERED
    assert record.deregistered_at == 5000.0
    assert record.signing_jwk == SIGNING  # kept for the audit trail
    with pytest.raises(InvalidTransition, match="deregistered -> deregistered"):
        store.deregister_device(provisioned_device, now=5001.0)
    with pytest.raises(UnknownDevice):
        store.deregister_device("ghost", now=1.0)


def test_use_token_once(store: Store) -> None:
    assert store.use_token_once("tok-1", exp=200.0, now=100.0) is True
    assert store.use_token_once("tok-1", exp=200.0, now=101.0) is False
    assert store.use_token_once("tok-2", exp=200.0, now=101.0) is True


def test_expired_token_is_refused(store: Store) -> None:
    assert store.use_token_once("late", exp=100.0, now=100.0) is False
    assert store.use_token_once("late", exp=100.0, now=150.0) is False


def _token_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(used_tokens)).scalar_one())


def test_use_token_once_purges_expired_rows_occasionally(store: Store) -> None:
    assert store.use_token_once("a", exp=110.0, now=100.0)
    assert store.use_token_once("b", exp=500.0, now=101.0)
    assert _token_rows(store) == 2
    # Within the purge interval nothing is purged even though "a" has expired.
    assert store.use_token_once("c", exp=500.0, now=150.0)
    assert _token_rows(store) == 3
    assert store.use_token_once("d", exp=500.0, now=161.0)
    assert _token_rows(store) == 3  # "a" went, "d" came
    assert store.use_token_once("b", exp=500.0, now=162.0) is False


def test_purge_expired_jti_counts_tokens(store: Store) -> None:
    store.use_token_once("x", exp=10.0, now=1.0)
    store.use_token_once("y", exp=30.0, now=1.0)
    assert store.purge_expired_jti(now=20.0) == 1
    assert store.purge_expired_jti(now=20.0) == 0
    assert _token_rows(store) == 1


def test_find_device_by_signing_kid(store: Store, provisioned_device: str) -> None:
    assert store.find_device_by_signing_kid("sig-1") is None
    _enrol(store, provisioned_device)
    found = store.find_device_by_signing_kid("sig-1")
    assert found is not None and found.device_id == provisioned_device
    assert store.find_device_by_signing_kid("sig-2") is None


def test_signing_kid_belongs_to_one_device(store: Store, provisioned_device: str) -> None:
    _enrol(store, provisioned_device)
    store.provision_device("copycat", "h", now=1.0)
    with pytest.raises(KeyIdTaken):
        _enrol(store, "copycat")
    copycat = store.get_device("copycat")
    assert copycat is not None and copycat.status is DeviceStatus.PROVISIONED
    found = store.find_device_by_signing_kid("sig-1")
    assert found is not None and found.device_id == provisioned_device


def test_signing_kid_is_validated(store: Store, provisioned_device: str) -> None:
    store.consume_enrolment_secret(provisioned_device, now=1.0)
    for bad in ("", "k" * 513, 7):
        with pytest.raises(ValueError, match="kid"):
            store.complete_enrolment(
                provisioned_device,
                signing_jwk={**SIGNING, "kid": bad},
                encryption_jwk=ENCRYPTION,
                suite=SUITE,
                certificate_pem="pem",
                now=2.0,
            )


def test_reprovision_resets_enrolment(store: Store, provisioned_device: str) -> None:
    _enrol(store, provisioned_device)
    store.accept_message(
        provisioned_device,
        seq=9,
        jti="j9",
        exp=10_000.0,
        mid=None,
        typ="t",
        body={},
        now=2100.0,
        advance=lambda highest, bitmap: (9, 1),
    )
    store.deregister_device(provisioned_device, now=2200.0)
    store.reprovision_device(provisioned_device, "hash-2", now=3000.0)
    record = store.get_device(provisioned_device)
    assert record is not None
    assert record.status is DeviceStatus.PROVISIONED
    assert (record.secret_hash, record.secret_used_at) == ("hash-2", None)
    assert (record.signing_jwk, record.certificate_pem, record.enrolled_at) == (None, None, None)
    assert record.deregistered_at is None
    # The old key no longer resolves, and the new enrolment may reuse it.
    assert store.find_device_by_signing_kid("sig-1") is None
    _enrol(store, provisioned_device, now=3050.0)
    seen: list[tuple[int, int]] = []

    def probe(highest: int, bitmap: int) -> tuple[int, int]:
        seen.append((highest, bitmap))
        return 1, 1

    store.accept_message(
        provisioned_device,
        seq=1,
        jti="j1",
        exp=10_000.0,
        mid=None,
        typ="t",
        body={},
        now=3100.0,
        advance=probe,
    )
    assert seen == [(0, 0)]  # the replay window starts over
    assert store.count_messages(provisioned_device) == 2  # history is kept


def test_reprovision_unknown_device(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.reprovision_device("ghost", "h", now=1.0)
