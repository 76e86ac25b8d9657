"""Refresh tokens: rotation, reuse detection (RFC 6819 §5.2.2.3), revocation."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import select

from hatchway.store import (
    RefreshFamilyExists,
    RefreshTokenInvalid,
    RefreshTokenReused,
    Store,
)
from hatchway.store.schema import refresh_tokens

pytest_plugins = ["store_fixtures"]


def h(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _start(
    store: Store,
    token: str = "t0",  # noqa: S107 - a test token, hashed like any other
    family: str = "fam-1",
    user: str = "Alice",
) -> None:
    store.create_refresh_token(
        h(token),
        username=user,
        client_id="hatchway-cli",
        device_name="Living-room TV",
        session_family=family,
        now=100.0,
        expires_at=1000.0,
        scope="openid",
    )


def test_create_and_rotate_chain(store: Store) -> None:
    _start(store)
    first = store.rotate_refresh_token(h("t0"), h("t1"), now=200.0, expires_at=2000.0)
    assert (first.family_id, first.username, first.client_id) == ("fam-1", "Alice", "hatchway-cli")
    assert (first.device_name, first.scope, first.created_at) == ("Living-room TV", "openid", 200.0)
    assert first.expires_at == 2000.0 and first.used_at is None
    second = store.rotate_refresh_token(h("t1"), h("t2"), now=300.0, expires_at=3000.0)
    assert second.token_hash == h("t2")
    spent = store.get_refresh_token(h("t0"))
    assert spent is not None and spent.used_at == 200.0
    (family,) = store.list_sessions()
    assert (family.created_at, family.last_used_at, family.revoked_at) == (100.0, 300.0, None)


def test_only_hashes_are_stored(store: Store) -> None:
    _start(store, token="very-secret-refresh-token")
    with store.engine.connect() as conn:
        stored = conn.execute(select(refresh_tokens.c.token_hash)).scalars().all()
    assert [bytes(v) for v in stored] == [h("very-secret-refresh-token")]
    with pytest.raises(ValueError):
        store.create_refresh_token(
            b"plain-token",
            username="a",
            client_id="c",
            device_name="d",
            session_family="f2",
            now=1.0,
            expires_at=2.0,
        )


def test_reuse_revokes_the_whole_family(store: Store) -> None:
    _start(store)
    store.rotate_refresh_token(h("t0"), h("t1"), now=200.0, expires_at=2000.0)
    # The attacker (or the owner: the server cannot tell) presents the old token.
    with pytest.raises(RefreshTokenReused):
        store.rotate_refresh_token(h("t0"), h("evil"), now=250.0, expires_at=2000.0)
    assert store.get_refresh_token(h("evil")) is None
    family = store.get_session_family("fam-1")
    assert family is not None and family.revoked_at == 250.0
    # The revocation committed: the current token is dead too.
    with pytest.raises(RefreshTokenInvalid) as caught:
        store.rotate_refresh_token(h("t1"), h("t2"), now=260.0, expires_at=2000.0)
    assert not isinstance(caught.value, RefreshTokenReused)
    assert store.list_sessions() == []


def test_reused_is_an_invalid_for_uniform_answers() -> None:
    assert issubclass(RefreshTokenReused, RefreshTokenInvalid)


def test_unknown_and_expired_tokens(store: Store) -> None:
    with pytest.raises(RefreshTokenInvalid):
        store.rotate_refresh_token(h("nope"), h("t1"), now=1.0, expires_at=2.0)
    _start(store)
    with pytest.raises(RefreshTokenInvalid):
        store.rotate_refresh_token(h("t0"), h("t1"), now=1000.0, expires_at=2000.0)
    # An expired token was not spent, and its family was not revoked.
    record = store.get_refresh_token(h("t0"))
    assert record is not None and record.used_at is None
    assert [f.family_id for f in store.list_sessions()] == ["fam-1"]
    assert store.list_sessions(now=1000.0) == []


def test_duplicate_family_or_token(store: Store) -> None:
    _start(store)
    with pytest.raises(RefreshFamilyExists):
        _start(store, token="other")
    with pytest.raises(RefreshFamilyExists):
        _start(store, family="fam-2")
    _start(store, token="t9", family="fam-3")
    with pytest.raises(ValueError):
        store.rotate_refresh_token(h("t0"), h("t9"), now=200.0, expires_at=2000.0)
    # The failed rotation changed nothing: t0 still rotates.
    store.rotate_refresh_token(h("t0"), h("t1"), now=200.0, expires_at=2000.0)


def test_list_and_revoke_sessions(store: Store) -> None:
    _start(store, "a0", "fam-a", user="Alice")
    _start(store, "b0", "fam-b", user="alice")
    _start(store, "c0", "fam-c", user="Bob")
    assert [f.family_id for f in store.list_sessions()] == ["fam-a", "fam-b", "fam-c"]
    assert [f.family_id for f in store.list_sessions("ALICE")] == ["fam-a", "fam-b"]
    assert store.revoke_session_family("fam-a", now=500.0)
    assert not store.revoke_session_family("fam-a", now=501.0)
    assert not store.revoke_session_family("ghost", now=501.0)
    with pytest.raises(RefreshTokenInvalid):
        store.rotate_refresh_token(h("a0"), h("a1"), now=502.0, expires_at=2000.0)
    assert store.revoke_user_sessions("Alice", now=600.0) == 1
    assert [f.family_id for f in store.list_sessions()] == ["fam-c"]
    revoked = store.get_session_family("fam-b")
    assert revoked is not None and revoked.revoked_at == 600.0
    assert store.get_session_family("ghost") is None


def test_concurrent_rotation_yields_one_live_token(store: Store) -> None:
    """Same token presented on several replicas at once: never two live tokens."""
    _start(store)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    lock = threading.Lock()

    def body(i: int) -> None:
        barrier.wait()
        try:
            store.rotate_refresh_token(h("t0"), h(f"n{i}"), now=200.0, expires_at=2000.0)
            outcome = "rotated"
        except RefreshTokenReused:
            outcome = "reused"
        except RefreshTokenInvalid:
            outcome = "invalid"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Serialised by the row lock: the first rotates, the second is caught as
    # reuse and revokes the family, the rest find it revoked.
    assert sorted(outcomes) == ["invalid", "invalid", "reused", "rotated"]
    # Reuse was detected, so the family (and the one new token) is revoked.
    family = store.get_session_family("fam-1")
    assert family is not None and family.revoked_at == 200.0
