"""Registered clients in the store (issue 8 §1), on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from hatchway.clients import (
    AntiPhishing,
    AuthMethod,
    ClientRecord,
    ClientType,
    hash_client_secret,
    new_client,
)
from hatchway.clients.model import MAX_CLIENT_ID_LENGTH
from hatchway.runtime import SeededRandom
from hatchway.store import ClientExists, Store, UnknownClient
from hatchway.store.schema import MAX_ID_LENGTH

pytest_plugins = ["store_fixtures"]

JWKS = {
    "keys": [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "kid": "rs1",
        }
    ]
}


def _tv(**changes: object) -> ClientRecord:
    record, secret = new_client(
        "tv",
        "Living-room TV app",
        now=100.0,
        random=SeededRandom(b"tv"),
        scopes=("profile", "offline_access"),
    )
    assert secret is None  # public clients have no secret
    return record


def test_public_client_round_trip(store: Store) -> None:
    record = store.add_client(_tv())
    got = store.get_client("tv")
    assert got == record
    assert got is not None
    assert got.client_type is ClientType.PUBLIC
    assert got.token_endpoint_auth_method is AuthMethod.NONE
    assert got.anti_phishing is AntiPhishing.CONFIRM_CODE
    assert got.scopes == ("profile", "offline_access")
    assert got.default_scope == "profile offline_access"
    assert got.access_ttl is None and got.refresh_ttl is None
    assert got.enabled


def test_duplicate_id_is_refused(store: Store) -> None:
    store.add_client(_tv())
    with pytest.raises(ClientExists):
        store.add_client(_tv())


def test_confidential_secret_is_stored_hashed_and_checked(store: Store) -> None:
    record, secret = new_client(
        "rs",
        "Resource server",
        now=1.0,
        random=SeededRandom(b"rs"),
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
    )
    assert secret is not None and len(secret) == 43
    store.add_client(record)
    with store.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT secret_hash FROM clients").scalar_one()
    assert secret not in raw and raw == hash_client_secret(secret)
    got = store.get_client("rs")
    assert got is not None and got.client_type is ClientType.CONFIDENTIAL
    assert got.verify_secret(secret)
    assert not got.verify_secret(secret[:-1])
    assert not got.verify_secret(secret + "A")
    assert not got.verify_secret("")
    assert "secret" not in repr(got) or "secret_hash" not in repr(got)
    assert "has_secret" in got.to_json() and raw not in str(got.to_json())


def test_private_key_jwt_keeps_its_jwks(store: Store) -> None:
    record, secret = new_client(
        "rs-jwt",
        "Resource server (JWT)",
        now=1.0,
        random=SeededRandom(),
        auth_method=AuthMethod.PRIVATE_KEY_JWT,
        jwks=JWKS,
    )
    assert secret is None
    store.add_client(record)
    got = store.get_client("rs-jwt")
    assert got is not None and got.jwks == JWKS and not got.verify_secret("anything")


@pytest.mark.parametrize(
    "changes",
    [
        {"token_endpoint_auth_method": AuthMethod.CLIENT_SECRET_POST},  # secret missing
        {"secret_hash": hash_client_secret("x")},  # a public client with a secret
        {"token_endpoint_auth_method": AuthMethod.PRIVATE_KEY_JWT},  # no jwks
        {"jwks": JWKS},  # public client with keys
        {"access_ttl": 5},
        {"access_ttl": 7200},
        {"refresh_ttl": 30},
        {"scopes": ("a b",)},
        {"scopes": ("profile", "profile")},
        {"scopes": ('quote"',)},
        {"name": ""},
        {"name": "TV\u202eppa"},
        {"name": " padded"},
        {"client_id": "-rf"},
        {"client_id": "two words"},
        {"client_id": "x" * (MAX_CLIENT_ID_LENGTH + 1)},
        {"client_id": "caf\u00e9"},
    ],
)
def test_inconsistent_records_are_refused(changes: dict[str, object]) -> None:
    base = {
        "client_id": "tv",
        "name": "TV",
        "scopes": ("profile",),
    }
    with pytest.raises(ValueError):
        ClientRecord(**{**base, **changes})  # type: ignore[arg-type]


def test_private_keys_are_refused_in_jwks() -> None:
    private = {"keys": [{**JWKS["keys"][0], "d": "secret-part"}]}
    with pytest.raises(ValueError, match="public keys only"):
        new_client(
            "rs",
            "RS",
            now=1.0,
            random=SeededRandom(),
            auth_method=AuthMethod.PRIVATE_KEY_JWT,
            jwks=private,
        )


def test_client_id_limit_is_the_store_limit() -> None:
    assert MAX_CLIENT_ID_LENGTH == MAX_ID_LENGTH


def test_unknown_and_impossible_ids_are_none(store: Store) -> None:
    assert store.get_client("nobody") is None
    assert store.get_client("x" * 300) is None
    assert store.get_client("") is None


def test_disable_enable_and_remove(store: Store) -> None:
    store.add_client(_tv())
    disabled = store.set_client_enabled("tv", False, now=200.0)
    assert not disabled.enabled and disabled.updated_at == 200.0
    assert store.get_client("tv") == disabled
    assert store.set_client_enabled("tv", True, now=300.0).enabled
    store.remove_client("tv")
    assert store.get_client("tv") is None
    with pytest.raises(UnknownClient):
        store.remove_client("tv")
    with pytest.raises(UnknownClient):
        store.set_client_enabled("tv", True, now=1.0)


def test_update_replaces_fields_and_rotates_secret(store: Store) -> None:
    record, first = new_client(
        "rs", "RS", now=1.0, random=SeededRandom(b"1"), auth_method=AuthMethod.CLIENT_SECRET_POST
    )
    store.add_client(record)
    _, second = new_client(
        "rs", "RS", now=1.0, random=SeededRandom(b"2"), auth_method=AuthMethod.CLIENT_SECRET_POST
    )
    assert first and second and first != second
    from dataclasses import replace

    updated = store.update_client(
        replace(record, secret_hash=hash_client_secret(second), scopes=("introspect",)), now=5.0
    )
    assert updated.created_at == 1.0 and updated.updated_at == 5.0
    assert updated.scopes == ("introspect",)
    assert updated.verify_secret(second) and not updated.verify_secret(first)
    with pytest.raises(UnknownClient):
        store.update_client(replace(_tv(), client_id="ghost"), now=6.0)


def test_list_is_ordered_by_id(store: Store) -> None:
    for cid in ("zeta", "alpha", "mid"):
        record, _ = new_client(cid, cid.title(), now=1.0, random=SeededRandom())
        store.add_client(record)
    assert [c.client_id for c in store.list_clients()] == ["alpha", "mid", "zeta"]


def test_unlock_time_is_its_own_column(store: Store) -> None:
    """Defect 5.1: a sign-in bumps updated_at but never the operator's unlock time."""
    from hatchway.login import make_verifier

    store.add_user("alice", make_verifier("pw", random=SeededRandom(), iterations=4096), now=1.0)
    assert store.get_user("alice").unlocked_at is None  # type: ignore[union-attr]
    after_success = store.record_password_success("alice", now=50.0)
    assert after_success.updated_at == 50.0 and after_success.unlocked_at is None
    unlocked = store.unlock_user("alice", now=60.0)
    assert unlocked.unlocked_at == 60.0
    assert store.record_password_success("alice", now=70.0).unlocked_at == 60.0
