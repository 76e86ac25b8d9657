"""Refresh tokens: rotation, reuse detection (RFC 6819 §5.2.2.3), revocation,
the absolute lifetime cap and the reuse interval for client retries (issue 8 §3)."""

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
    first = store.rotate_refresh_token(h("t0"), h("t1"), now=200.0, expires_at=2000.0).token
    assert (first.family_id, first.username, first.client_id) == ("fam-1", "Alice", "hatchway-cli")
    assert (first.device_name, first.scope, first.created_at) == ("Living-room TV", "openid", 200.0)
    assert first.expires_at == 2000.0 and first.used_at is None
    second = store.rotate_refresh_token(h("t1"), h("t2"), now=300.0, expires_at=3000.0).token
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


# --- issue 8 §3: absolute lifetime and reuse interval ----------------------------


def _capped_start(store: Store, cap: float = 5000.0) -> None:
    store.create_refresh_token(
        h("t0"),
        username="Alice",
        client_id="hatchway-cli",
        device_name="TV",
        session_family="fam-1",
        now=100.0,
        expires_at=1000.0,
        session_expires_at=cap,
    )


def test_family_has_an_absolute_end_that_rotation_never_extends(store: Store) -> None:
    _capped_start(store, cap=2500.0)
    first = store.get_refresh_token(h("t0"))
    assert first is not None and first.session_expires_at == 2500.0
    # Each rotation slides the token's expiry forward, but never past the cap.
    second = store.rotate_refresh_token(h("t0"), h("t1"), now=900.0, expires_at=1900.0).token
    assert second.expires_at == 1900.0
    third = store.rotate_refresh_token(h("t1"), h("t2"), now=1800.0, expires_at=2800.0).token
    assert third.expires_at == 2500.0 and third.session_expires_at == 2500.0
    family = store.get_session_family("fam-1")
    assert family is not None and family.expires_at == 2500.0
    # At the cap the live token is refused, and nothing is revoked or spent:
    # the session simply ended.
    with pytest.raises(RefreshTokenInvalid) as caught:
        store.rotate_refresh_token(h("t2"), h("t3"), now=2500.0, expires_at=3500.0)
    assert not isinstance(caught.value, RefreshTokenReused)
    record = store.get_refresh_token(h("t2"))
    assert record is not None and record.used_at is None
    assert store.list_sessions(now=2500.0) == []


def test_first_token_is_cut_to_the_cap(store: Store) -> None:
    _capped_start(store, cap=500.0)
    record = store.get_refresh_token(h("t0"))
    assert record is not None and record.expires_at == 500.0


def test_retry_within_the_interval_gets_the_same_successor(store: Store) -> None:
    _capped_start(store)
    first = store.rotate_refresh_token(
        h("t0"), h("t1"), now=200.0, expires_at=2000.0, reuse_interval=10, sealed_successor=b"S1"
    )
    assert first.sealed_successor is None and first.token.token_hash == h("t1")
    # The retry proposes its own new token; it is not stored, the first one is returned.
    retry = store.rotate_refresh_token(
        h("t0"), h("t1b"), now=209.0, expires_at=2009.0, reuse_interval=10, sealed_successor=b"X"
    )
    assert retry.sealed_successor == b"S1"
    assert retry.token.token_hash == h("t1") and retry.token.expires_at == 2000.0
    assert store.get_refresh_token(h("t1b")) is None
    family = store.get_session_family("fam-1")
    assert family is not None and family.revoked_at is None
    # The successor still rotates normally.
    store.rotate_refresh_token(h("t1"), h("t2"), now=220.0, expires_at=2020.0, reuse_interval=10)


def test_reuse_after_the_interval_still_revokes_the_family(store: Store) -> None:
    _capped_start(store)
    store.rotate_refresh_token(
        h("t0"), h("t1"), now=200.0, expires_at=2000.0, reuse_interval=10, sealed_successor=b"S1"
    )
    with pytest.raises(RefreshTokenReused):
        store.rotate_refresh_token(
            h("t0"), h("t1b"), now=210.5, expires_at=2010.0, reuse_interval=10
        )
    family = store.get_session_family("fam-1")
    assert family is not None and family.revoked_at == 210.5
    with pytest.raises(RefreshTokenInvalid):
        store.rotate_refresh_token(h("t1"), h("t2"), now=211.0, expires_at=2011.0)


def test_old_token_after_the_successor_was_used_is_reuse(store: Store) -> None:
    """Within the interval, but the client already moved on: that is a copy."""
    _capped_start(store)
    store.rotate_refresh_token(
        h("t0"), h("t1"), now=200.0, expires_at=2000.0, reuse_interval=10, sealed_successor=b"S1"
    )
    store.rotate_refresh_token(
        h("t1"), h("t2"), now=202.0, expires_at=2002.0, reuse_interval=10, sealed_successor=b"S2"
    )
    # Rotating t1 dropped t0's sealed copy of t1: it can never be handed out again.
    with store.engine.connect() as conn:
        kept = conn.execute(
            select(refresh_tokens.c.successor_sealed).where(refresh_tokens.c.token_hash == h("t0"))
        ).scalar_one()
    assert kept is None
    with pytest.raises(RefreshTokenReused):
        store.rotate_refresh_token(h("t0"), h("x"), now=203.0, expires_at=2003.0, reuse_interval=10)
    family = store.get_session_family("fam-1")
    assert family is not None and family.revoked_at == 203.0


def test_retry_without_a_sealed_successor_or_interval_is_reuse(store: Store) -> None:
    _capped_start(store)
    store.rotate_refresh_token(h("t0"), h("t1"), now=200.0, expires_at=2000.0, reuse_interval=10)
    with pytest.raises(RefreshTokenReused):
        store.rotate_refresh_token(h("t0"), h("x"), now=201.0, expires_at=2001.0, reuse_interval=10)


def test_concurrent_retries_share_one_successor(store: Store) -> None:
    """Four threads present the same token at once (a client retrying, possibly
    through several replicas): one rotates, the others get that same successor,
    and the family stays signed in with exactly one live token."""
    _capped_start(store)
    barrier = threading.Barrier(4)
    results: list[tuple[bytes, bytes | None]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def body(i: int) -> None:
        barrier.wait()
        try:
            rotation = store.rotate_refresh_token(
                h("t0"),
                h(f"n{i}"),
                now=200.0 + i * 0.01,
                expires_at=2000.0,
                reuse_interval=10,
                sealed_successor=f"sealed-{i}".encode(),
            )
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append((rotation.token.token_hash, rotation.sealed_successor))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    successors = {token_hash for token_hash, _ in results}
    assert len(results) == 4 and len(successors) == 1
    (winner,) = successors
    fresh = [sealed for _, sealed in results if sealed is None]
    retried = {sealed for _, sealed in results if sealed is not None}
    assert len(fresh) == 1
    # Every retry got the winner's sealed successor.
    (sealed,) = retried
    assert winner == h(sealed.decode().replace("sealed-", "n"))
    family = store.get_session_family("fam-1")
    assert family is not None and family.revoked_at is None
    with store.engine.connect() as conn:
        live = (
            conn.execute(
                select(refresh_tokens.c.token_hash).where(refresh_tokens.c.used_at.is_(None))
            )
            .scalars()
            .all()
        )
    assert [bytes(v) for v in live] == [winner]
