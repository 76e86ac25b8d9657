"""The shared writer of ``serve --workers N`` (flows/ingest/remote.py), on both stores.

A worker's ``RemoteCommitter`` and the supervisor's ``CommitHub`` over a real socket
pair: every answer is what the in-process group committer gives (accepted,
duplicate ``mid``, replayed ``seq``, replayed ``jti``, unknown device, bad id), an
answer comes only after the commit, and a writer that goes away fails what was
pending instead of leaving it waiting.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.errors import HatchwayError, InvalidMessage
from hatchway.flows.ingest import remote
from hatchway.flows.ingest.remote import CommitHub, RemoteCommitter
from hatchway.flows.ingest.window import window_advance
from hatchway.store import AcceptRequest, AcceptResult, ReplayedJti, Store, UnknownDevice

pytest_plugins = ["store_fixtures"]

WINDOW = 64


def req(device: str, seq: int, jti: str, mid: str | None = None) -> AcceptRequest:
    return AcceptRequest(
        device,
        seq=seq,
        jti=jti,
        exp=10_000.0,
        mid=mid,
        typ="telemetry",
        body={"seq": seq, "big": 2**70, "text": "é\u2028"},
        now=1000.0 + seq,
        advance=window_advance(seq, WINDOW),
    )


@pytest.fixture
def link(store: Store) -> Iterator[tuple[RemoteCommitter, CommitHub]]:
    hub = CommitHub(store, window_size=WINDOW)
    ours, theirs = multiprocessing.get_context("spawn").Pipe(duplex=True)
    hub.serve(ours)
    worker = RemoteCommitter(theirs)
    try:
        yield worker, hub
    finally:
        worker.close()
        hub.close()


def test_answers_match_the_in_process_committer(
    store: Store, enrolled_device: str, link: tuple[RemoteCommitter, CommitHub]
) -> None:
    worker, _ = link
    d = enrolled_device
    first = worker.accept(req(d, 1, "j1", mid="m1"))
    assert isinstance(first, AcceptResult) and not first.duplicate and first.reply_seq == 1
    # The answer came after the commit: the message is there for any other reader.
    [stored] = store.list_messages(d)
    assert stored.body == {"seq": 1, "big": 2**70, "text": "é\u2028"}
    retransmission = worker.accept(req(d, 2, "j2", mid="m1"))
    assert retransmission.duplicate and retransmission.message_id == first.message_id
    with pytest.raises(InvalidMessage) as replayed:
        worker.accept(req(d, 2, "j3"))
    assert replayed.value.reason == "seq replayed"
    with pytest.raises(ReplayedJti):
        worker.accept(req(d, 3, "j1"))
    with pytest.raises(UnknownDevice):
        worker.accept(req("nobody", 1, "j9"))
    with pytest.raises(ValueError):  # refused in the worker, before it is sent
        worker.submit(req(d, 4, "x" * 500))
    assert store.count_messages(d) == 1


def test_many_at_once_share_batches(
    store: Store, enrolled_device: str, link: tuple[RemoteCommitter, CommitHub]
) -> None:
    worker, hub = link
    futures = [worker.submit(req(enrolled_device, s, f"j{s}", mid=f"m{s}")) for s in range(1, 41)]
    results = [f.result(timeout=30) for f in futures]
    assert sorted(r.reply_seq for r in results) == list(range(1, 41))
    assert store.count_messages(enrolled_device) == 40
    assert hub.batches < 40


def test_a_writer_that_goes_away_fails_what_is_pending(store: Store) -> None:
    ours, theirs = multiprocessing.get_context("spawn").Pipe(duplex=True)
    worker = RemoteCommitter(theirs)
    future = worker.submit(req("dev", 1, "j1"))
    ours.close()  # the supervisor is gone, the request unanswered
    with pytest.raises(ConnectionError):
        future.result(timeout=10)
    with pytest.raises(RuntimeError):
        worker.submit(req("dev", 2, "j2"))
    worker.close()


def test_a_malformed_request_closes_the_link(
    store: Store, enrolled_device: str, caplog: pytest.LogCaptureFixture
) -> None:
    hub = CommitHub(store, window_size=WINDOW)
    ours, theirs = multiprocessing.get_context("spawn").Pipe(duplex=True)
    hub.serve(ours)
    theirs.send_bytes(b'[1, "too", "short"]')
    with pytest.raises(EOFError):
        theirs.recv_bytes()
    hub.close()
    assert "malformed commit request" in caplog.text
    assert store.count_messages(enrolled_device) == 0


refusals: st.SearchStrategy[Exception] = st.one_of(
    st.builds(ReplayedJti),
    st.builds(InvalidMessage, st.text(max_size=40)),
    st.builds(UnknownDevice, st.text(max_size=40)),
    st.builds(HatchwayError, st.text(max_size=40)),
    st.builds(ValueError, st.text(max_size=40)),
    st.builds(TypeError, st.text(max_size=40)),
)


@given(refusals)
def test_a_refusal_keeps_its_kind_and_detail_across_the_link(exc: Exception) -> None:
    kind, detail = remote._refusal_kind(exc)
    again: Any = remote._REFUSALS[kind](detail)
    assert type(again) is type(exc)
    if isinstance(exc, InvalidMessage):
        assert again.reason == exc.reason
    elif not isinstance(exc, ReplayedJti):
        assert str(again) == str(exc)
