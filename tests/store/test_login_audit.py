"""Audit log and runtime flags (the issue's "Controls and records")."""

from __future__ import annotations

import threading

import pytest

from hatchway.store import AuditEvent, Store
from hatchway.store.audit import MAX_USER_AGENT

pytest_plugins = ["store_fixtures"]


def test_audit_round_trip_newest_first(store: Store) -> None:
    first = store.audit(
        AuditEvent.START,
        now=10.0,
        username="alice",
        ip="203.0.113.7",
        user_agent="TV/1.0",
        session_ref="hwl1.abc",
        detail={"device_name": "Living-room TV"},
    )
    second = store.audit("approved", now=11.0, username="alice", ip="198.51.100.2")
    assert second > first
    records = store.list_audit()
    assert [r.audit_id for r in records] == [second, first]
    newest, oldest = records
    assert newest.event is AuditEvent.APPROVED and newest.detail is None
    assert (oldest.at, oldest.username, oldest.ip, oldest.user_agent, oldest.session_ref) == (
        10.0,
        "alice",
        "203.0.113.7",
        "TV/1.0",
        "hwl1.abc",
    )
    assert oldest.detail == {"device_name": "Living-room TV"}


def test_every_event_kind_is_storable_and_filterable(store: Store) -> None:
    for i, event in enumerate(AuditEvent):
        store.audit(event, now=float(i))
    assert {r.event for r in store.list_audit(limit=1000)} == set(AuditEvent)
    only = store.list_audit(event=AuditEvent.EXPIRED)
    assert [r.event for r in only] == [AuditEvent.EXPIRED]
    assert len(store.list_audit(limit=3)) == 3
    assert store.list_audit(limit=0) == []


def test_unknown_event_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        store.audit("password_was_hunter2", now=1.0)
    assert store.list_audit() == []


def test_hostile_free_text_is_clipped_not_refused(store: Store) -> None:
    store.audit(AuditEvent.RATE_LIMITED, now=1.0, user_agent="A" * 10_000, ip="1" * 500)
    (record,) = store.list_audit()
    assert record.user_agent == "A" * MAX_USER_AGENT
    assert record.ip is not None and len(record.ip) == 64


def test_flags_set_overwrite_and_shared(store_url: str, store: Store) -> None:
    assert store.get_flag("login_flow") is None
    store.set_flag("login_flow", "off", now=1.0)
    # A second Store on the same database plays another replica.
    with Store.open(store_url) as replica:
        assert replica.get_flag("login_flow") == "off"
        replica.set_flag("login_flow", "on", now=2.0)
    assert store.get_flag("login_flow") == "on"
    with pytest.raises(ValueError):
        store.set_flag("", "x", now=1.0)
    with pytest.raises(ValueError):
        store.set_flag("x" * 65, "x", now=1.0)


def test_concurrent_first_set_flag_is_an_upsert(store: Store) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            store.set_flag("race", f"v{i}", now=float(i))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert store.get_flag("race") in {"v0", "v1", "v2", "v3"}


def test_terminal_escapes_never_reach_the_audit_log(store: Store) -> None:
    store.audit(
        AuditEvent.START,
        now=1.0,
        username="\x1b]8;;https://evil.example/\x07alice\x1b[2K\r",
        user_agent="ua\x1b[31mred\n\rfake line",
        ip="127.0.0.1",
    )
    (record,) = store.list_audit(limit=1)
    for text in (record.username, record.user_agent):
        assert text is not None
        assert not any(ord(ch) < 32 or ch == "\x7f" for ch in text)
    assert record.username is not None and "alice" in record.username
