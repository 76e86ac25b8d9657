"""Concurrent writers and restart survival, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import select
from store_enrol import enrol_device
from store_replay import Rejected, window_advance

from hatchway.store import ReplayedJti, SecretAlreadyUsed, Store
from hatchway.store.schema import seen_jti

pytest_plugins = ["store_fixtures"]

THREADS = 4


def _run_threads(work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # surfaced below; a thread cannot fail a test
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_interleaved_seqs_are_accepted_exactly_once(store: Store, enrolled_device: str) -> None:
    """Every thread submits every seq (same jti per seq) in its own order."""
    seqs = list(range(1, 41))
    accepted: list[int] = []
    rejected: Counter[str] = Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        order = seqs[:]
        random.Random(i).shuffle(order)
        for seq in order:
            try:
                store.accept_message(
                    enrolled_device,
                    seq=seq,
                    jti=f"jti-{seq}",
                    exp=10_000.0,
                    mid=None,
                    typ="telemetry",
                    body={"thread": i},
                    now=1000.0,
                    advance=window_advance(seq),
                )
            except (Rejected, ReplayedJti) as exc:
                with lock:
                    rejected[type(exc).__name__] += 1
            else:
                with lock:
                    accepted.append(seq)

    _run_threads(work)
    assert sorted(accepted) == seqs  # each seq once, none lost
    assert sum(rejected.values()) == (THREADS - 1) * len(seqs)
    stored = [m.seq for m in store.list_messages(enrolled_device, limit=1000)]
    assert sorted(stored) == seqs
    with store.engine.connect() as conn:
        jtis = conn.execute(select(seen_jti.c.jti)).scalars().all()
    assert sorted(jtis) == sorted(f"jti-{s}" for s in seqs)


def test_same_jti_under_different_seqs_is_accepted_once(store: Store, enrolled_device: str) -> None:
    wins: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for round_ in range(10):
            seq = round_ * THREADS + i + 1
            try:
                store.accept_message(
                    enrolled_device,
                    seq=seq,
                    jti=f"shared-{round_}",
                    exp=10_000.0,
                    mid=None,
                    typ="t",
                    body={},
                    now=1.0,
                    advance=window_advance(seq),
                )
            except ReplayedJti:
                continue
            with lock:
                wins.append(round_)

    _run_threads(work)
    assert sorted(wins) == list(range(10))
    assert store.count_messages(enrolled_device) == 10


def test_failing_advance_under_contention_leaves_no_rows(
    store: Store, enrolled_device: str
) -> None:
    def refuse(highest: int, bitmap: int) -> tuple[int, int]:
        raise Rejected("policy")

    def work(i: int) -> None:
        for n in range(10):
            seq = n * THREADS + i + 1
            advance = window_advance(seq) if seq % 2 else refuse
            try:
                store.accept_message(
                    enrolled_device,
                    seq=seq,
                    jti=f"j-{seq}",
                    exp=10_000.0,
                    mid=None,
                    typ="t",
                    body={},
                    now=1.0,
                    advance=advance,
                )
            except Rejected:
                assert seq % 2 == 0

    _run_threads(work)
    with store.engine.connect() as conn:
        jtis = set(conn.execute(select(seen_jti.c.jti)).scalars())
    assert jtis == {f"j-{s}" for s in range(1, 41, 2)}
    assert {m.seq for m in store.list_messages(enrolled_device)} == set(range(1, 41, 2))


def test_two_store_instances_share_one_window(store_url: str) -> None:
    """Two Store.open on one database (two processes or replicas) still serialise."""
    stores = [Store.open(store_url), Store.open(store_url)]
    try:
        stores[0].provision_device("dev", "h", now=1.0)
        enrol_device(stores[0], "dev")
        accepted: list[int] = []
        lock = threading.Lock()

        def work(i: int) -> None:
            mine = stores[i % 2]
            for seq in range(1, 31):
                try:
                    mine.accept_message(
                        "dev",
                        seq=seq,
                        jti=f"j{seq}-{i % 2}",
                        exp=10_000.0,
                        mid=f"m{seq}",
                        typ="t",
                        body={},
                        now=1.0,
                        advance=window_advance(seq),
                    )
                except Rejected:
                    continue
                with lock:
                    accepted.append(seq)

        _run_threads(work)
        assert sorted(accepted) == list(range(1, 31))
        assert stores[1].count_messages("dev") == 30
    finally:
        for opened in stores:
            opened.close()


def test_outbound_seq_is_unique_under_contention(store: Store, enrolled_device: str) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for _ in range(25):
            value = store.next_outbound_seq(enrolled_device)
            with lock:
                got.append(value)

    _run_threads(work)
    assert sorted(got) == list(range(1, THREADS * 25 + 1))


def test_state_survives_reopen(store_url: str) -> None:
    """A restart (a new Store.open on the same database) keeps every guard."""
    first = Store.open(store_url)
    first.provision_device("dev", "hash", now=1.0)
    enrol_device(first, "dev", now=2.0)
    assert first.use_token_once("enrol-token", exp=1000.0, now=3.0)
    for seq in (1, 2, 5):
        first.accept_message(
            "dev",
            seq=seq,
            jti=f"j{seq}",
            exp=1000.0,
            mid=f"m{seq}",
            typ="t",
            body={"n": seq},
            now=4.0,
            advance=window_advance(seq),
        )
    # Each accepted message reserved its reply's number (1, 2, 3) in its transaction.
    assert first.next_outbound_seq("dev") == 4
    assert first.next_outbound_seq("dev") == 5
    command_id = first.queue_command("dev", {"op": "reboot"}, now=5.0)
    first.close()

    second = Store.open(store_url)
    try:
        with pytest.raises(SecretAlreadyUsed):
            second.consume_enrolment_secret("dev", now=10.0)
        assert second.use_token_once("enrol-token", exp=1000.0, now=10.0) is False
        with pytest.raises(Rejected):  # the window remembers seq 2
            second.accept_message(
                "dev", seq=2, jti="fresh", exp=1000.0, mid=None, typ="t", body={},
                now=10.0, advance=window_advance(2),
            )  # fmt: skip
        with pytest.raises(ReplayedJti):
            second.accept_message(
                "dev", seq=6, jti="j5", exp=1000.0, mid=None, typ="t", body={},
                now=10.0, advance=window_advance(6),
            )  # fmt: skip
        accepted = second.accept_message(
            "dev", seq=3, jti="j3", exp=1000.0, mid="m3", typ="t", body={},
            now=10.0, advance=window_advance(3),
        )  # fmt: skip
        assert accepted.duplicate is False
        assert second.next_outbound_seq("dev") == 7  # 6 went to the reply to seq 3
        assert [m.seq for m in second.list_messages("dev")] == [1, 2, 5, 3]
        assert [c.command_id for c in second.pending_commands("dev")] == [command_id]
    finally:
        second.close()
