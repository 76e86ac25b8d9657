"""Users: SCRAM verifiers only, case-insensitive names, persisted attempt guard."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select

from hatchway.login import LockoutPolicy, ScramClient, ScramServerExchange, make_verifier
from hatchway.runtime import SeededRandom
from hatchway.store import (
    MAX_USERNAME_LENGTH,
    Store,
    UnknownUser,
    UserExists,
    username_key,
)
from hatchway.store.schema import users

pytest_plugins = ["store_fixtures"]

# RFC 7677's floor keeps PBKDF2 fast in tests; production uses 600,000.
ITERATIONS = 4096


def _verifier(password: str = "pencil", seed: bytes = b"v") -> dict[str, object]:  # noqa: S107
    made = make_verifier(password, random=SeededRandom(seed), iterations=ITERATIONS)
    loaded: dict[str, object] = json.loads(made.to_json())
    return loaded


def test_add_and_get_preserves_case_and_finds_any_case(store: Store) -> None:
    added = store.add_user("Alice", _verifier(), now=100.0)
    assert added.username == "Alice"
    for spelling in ("Alice", "alice", "ALICE", "ａｌｉｃｅ"):  # full-width folds too
        found = store.get_user(spelling)
        assert found is not None and found.username == "Alice"
    assert found is not None
    assert found.created_at == found.updated_at == 100.0
    assert not found.disabled and found.failed_attempts == 0 and not found.locked
    assert store.get_user("bob") is None


def test_names_unique_case_insensitively(store: Store) -> None:
    store.add_user("Alice", _verifier(), now=1.0)
    with pytest.raises(UserExists):
        store.add_user("aLiCe", _verifier(), now=2.0)
    # German sharp s casefolds to "ss": the two names read the same, so one wins.
    store.add_user("Strauß", _verifier(), now=3.0)
    with pytest.raises(UserExists):
        store.add_user("STRAUSS", _verifier(), now=4.0)
    assert [u.username for u in store.list_users()] == ["Alice", "Strauß"]


@pytest.mark.parametrize(
    "name", ["", "x" * (MAX_USERNAME_LENGTH + 1), " alice", "alice ", "al\u200bice", "a\nb"]
)
def test_invalid_names_refused_and_never_found(store: Store, name: str) -> None:
    with pytest.raises(ValueError):
        store.add_user(name, _verifier(), now=1.0)
    assert store.get_user(name) is None


def test_longest_name_accepted(store: Store) -> None:
    name = "ä" * MAX_USERNAME_LENGTH
    store.add_user(name, _verifier(), now=1.0)
    assert username_key(name.upper()) == name
    record = store.get_user(name.upper())
    assert record is not None and record.username == name


def test_only_a_scram_verifier_is_stored(store: Store) -> None:
    smuggled = {**_verifier(), "password": "pencil"}
    store.add_user("alice", smuggled, now=1.0)
    with store.engine.connect() as conn:
        stored = conn.execute(select(users.c.verifier)).scalar_one()
    assert "pencil" not in stored and "password" not in stored
    assert set(json.loads(stored)) == {
        "mechanism",
        "salt",
        "iterations",
        "stored_key",
        "server_key",
    }
    with pytest.raises(ValueError):
        store.add_user("bob", {"password": "pencil"}, now=1.0)
    with pytest.raises(ValueError):
        store.add_user("carol", {**_verifier(), "mechanism": "SCRAM-SHA-1"}, now=1.0)
    assert store.get_user("bob") is None and store.get_user("carol") is None


def test_stored_verifier_authenticates_through_scram(store: Store) -> None:
    """The round trip through the database keeps a verifier that really verifies."""
    record = store.add_user(
        "alice", make_verifier("pencil", random=SeededRandom(b"s"), iterations=ITERATIONS), now=1.0
    )
    fetched = store.get_user("ALICE")
    assert fetched is not None and fetched.scram_verifier == record.scram_verifier
    ref = "hwl1.session"
    exchange = ScramServerExchange(ref, fetched.scram_verifier, random=SeededRandom(b"srv"))
    client = ScramClient(ref, "pencil", random=SeededRandom(b"cli"))
    server_first = exchange.start(client.first())
    client.verify(exchange.finish(client.final(server_first)))


def test_set_password_replaces_verifier_and_clears_attempts(store: Store) -> None:
    store.add_user("alice", _verifier("old"), now=1.0)
    store.record_password_failure("alice", now=2.0)
    updated = store.set_user_password("ALICE", _verifier("new", b"w"), now=3.0)
    assert updated.verifier == _verifier("new", b"w")
    assert updated.failed_attempts == 0 and updated.updated_at == 3.0
    assert updated.created_at == 1.0
    with pytest.raises(UnknownUser):
        store.set_user_password("ghost", _verifier(), now=3.0)


def test_disable_and_enable(store: Store) -> None:
    store.add_user("alice", _verifier(), now=1.0)
    assert store.set_user_disabled("alice", True, now=5.0).disabled
    record = store.get_user("alice")
    assert record is not None and record.disabled and record.updated_at == 5.0
    assert not store.set_user_disabled("Alice", False, now=6.0).disabled
    with pytest.raises(UnknownUser):
        store.set_user_disabled("ghost", True, now=1.0)


def test_failures_back_off_then_lock_and_success_clears(store: Store) -> None:
    policy = LockoutPolicy(free_failures=2, base_delay=10.0, lockout_after=4)
    store.add_user("alice", _verifier(), now=1.0)
    first = store.record_password_failure("alice", now=100.0, policy=policy)
    # A free failure blocks for zero seconds: blocked_until is simply "now".
    assert (first.failed_attempts, first.blocked_until, first.last_failure_at) == (1, 100.0, 100.0)
    store.record_password_failure("alice", now=101.0, policy=policy)
    third = store.record_password_failure("ALICE", now=102.0, policy=policy)
    assert third.failed_attempts == 3 and third.blocked_until == 112.0
    assert not policy.check(third.attempt_state, 105.0).allowed
    assert policy.check(third.attempt_state, 112.0).allowed
    fourth = store.record_password_failure("alice", now=120.0, policy=policy)
    assert fourth.locked and policy.is_locked(fourth.attempt_state, 130.0)
    persisted = store.get_user("alice")
    assert persisted is not None and persisted.attempt_state == fourth.attempt_state
    cleared = store.record_password_success("alice", now=200.0)
    assert (cleared.failed_attempts, cleared.blocked_until, cleared.locked) == (0, 0.0, False)
    assert cleared.last_failure_at == 120.0  # kept for the operator's view
    with pytest.raises(UnknownUser):
        store.record_password_failure("ghost", now=1.0)
    with pytest.raises(UnknownUser):
        store.record_password_success("ghost", now=1.0)


def test_concurrent_failures_are_all_counted(store: Store) -> None:
    """Failures arriving on several replicas at once must not overwrite each other."""
    store.add_user("alice", _verifier(), now=1.0)
    policy = LockoutPolicy(free_failures=3, lockout_after=1000)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def hammer() -> None:
        barrier.wait()
        try:
            for _ in range(10):
                store.record_password_failure("alice", now=50.0, policy=policy)
        except BaseException as exc:  # surfaced below; a thread cannot fail a test
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    record = store.get_user("alice")
    assert record is not None and record.failed_attempts == 40
