"""Two ``hatchway serve`` replicas behind one PostgreSQL store and bus.

* The device starts the RFC 8628 flow on A and long-polls (push) on B; the
  phone approves on A; B's waiter is woken by LISTEN/NOTIFY well inside the
  5 s poll interval, number matching is answered across replicas, and the
  tokens go out exactly once whichever replica is asked.
* A pending-poll snapshot B keeps in memory is dropped when A decides.
* A device enrolled through A sends sealed messages alternately to A's and
  B's plain listeners; a token accepted by one is refused by the other (the
  replay window lives in the shared store).
* A revocation on one replica (refresh-token reuse, ``sessions revoke``) holds
  on the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.device import Device, HttpTransport
from hatchway.login.authorization import DeviceAuthorization
from hatchway.login.device_client import DeviceLoginClient, LoginFailed, Tokens
from hatchway.login.phone import PhoneClient
from hatchway.server.process import ServerProcess
from hatchway.store import Store
from tests.login_e2e.conftest import PASSWORD, add_user, hatchway
from tests.replicas.conftest import Replicas

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

JOSE = {"content-type": "application/jose"}
PUSH_DEADLINE = 2.0
"""Seconds from the phone's Approve to the device knowing, at most (the poll interval is 5)."""


class Pair:
    """Device and phone clients on each replica (same public URL, different backends)."""

    def __init__(self, replicas: Replicas) -> None:
        self.http_a = replicas.https_client(replicas.a)
        self.http_b = replicas.https_client(replicas.b)
        self.public = replicas.public_https
        self.device_a = DeviceLoginClient(self.public, http=self.http_a, client_id="tv")
        self.device_b = DeviceLoginClient(self.public, http=self.http_b, client_id="tv")
        self.phone_a = PhoneClient(self.http_a)
        self.phone_b = PhoneClient(self.http_b)
        # A phone whose page and SCRAM start land on B and whose SCRAM finish
        # lands on A: the sealed exchange token and CSRF cookie must carry over.
        self.http_split = replicas.https_client(
            replicas.b, paths={"/login/scram/finish": replicas.a}
        )
        self.phone_split = PhoneClient(self.http_split)

    def close(self) -> None:
        self.http_a.close()
        self.http_b.close()
        self.http_split.close()


@pytest.fixture
def pair(replicas: Replicas) -> Iterator[Pair]:
    clients = Pair(replicas)
    try:
        yield clients
    finally:
        clients.close()


def _error(body: dict[str, Any]) -> tuple[str, str]:
    return str(body.get("error")), str(body.get("error_description", ""))


def test_replicas_publish_one_identity(pair: Pair) -> None:
    meta_a = pair.http_a.get(pair.public + "/.well-known/oauth-authorization-server").json()
    meta_b = pair.http_b.get(pair.public + "/.well-known/oauth-authorization-server").json()
    assert meta_a == meta_b
    assert meta_a["issuer"] == pair.public
    jwks_a = pair.http_a.get(meta_a["jwks_uri"]).json()
    assert pair.http_b.get(meta_b["jwks_uri"]).json() == jwks_a


def test_approve_on_a_wakes_device_waiting_on_b(
    replicas: Replicas, pair: Pair, record_property: Callable[[str, object], None]
) -> None:
    add_user(replicas.a, "alice")
    started = pair.device_a.start("alice", device_name="Living-room TV")
    assert started.interval == 5  # the push must beat this by far

    # The long poll on B really blocks while nothing happens (and B's bus is
    # connected by the time it returns: it LISTENs on first use).
    t = time.monotonic()
    assert pair.device_b.wait(started, timeout=0.5)["state"] == "pending"
    assert time.monotonic() - t >= 0.45

    woke: dict[str, Any] = {}

    def waiter() -> None:
        try:
            woke["view"] = pair.device_b.wait(started, timeout=20)
        except BaseException as exc:  # reported by the main thread
            woke["error"] = exc
        woke["at"] = time.monotonic()

    thread = threading.Thread(target=waiter, name="device-waits-on-b", daemon=True)
    thread.start()
    time.sleep(0.5)  # parked on B's bus
    assert "at" not in woke, woke

    approved_at = time.monotonic()
    request = pair.phone_a.open(started.verification_uri_complete)
    assert "Living-room TV" in request.text
    approval = pair.phone_a.approve(request, PASSWORD, origin=pair.public)
    thread.join(15)
    assert not thread.is_alive(), "the device waiting on B was never woken"
    assert "error" not in woke, woke
    latency = woke["at"] - approved_at
    record_property("approve_on_a_to_device_on_b_s", round(latency, 4))
    print(f"approve on A -> device waiting on B woken: {latency * 1000:.0f} ms")
    assert approval.status == "approved"
    assert woke["view"] == {"state": "approved", "match_number_required": True}
    assert latency < PUSH_DEADLINE, f"device on B learned the approval after {latency:.2f}s"

    # Number matching across replicas: the number shown by A's page is asked
    # for by B, a wrong guess counts on A, the right one completes on B.
    assert approval.match_number is not None
    tokens, body = pair.device_b.request_token(started)
    assert tokens is None and _error(body) == ("authorization_pending", "awaiting_match_number")
    wrong = f"{(int(approval.match_number) + 1) % 100:02d}"
    tokens, body = pair.device_a.request_token(started, match_number=wrong)
    assert tokens is None
    assert _error(body) == ("authorization_pending", "match_number_mismatch; attempts_left=2")
    tokens, body = pair.device_b.request_token(started, match_number=approval.match_number)
    assert tokens is not None, body

    # Exactly once: the same device_code is spent on both replicas.
    for device in (pair.device_a, pair.device_b):
        again, body = device.request_token(started, match_number=approval.match_number)
        assert again is None and _error(body)[0] == "invalid_grant"
        again, body = device.request_token(started)
        assert again is None and _error(body)[0] == "invalid_grant"

    # The access token issued by B is honoured by A.
    for device in (pair.device_a, pair.device_b):
        status, who = device.whoami(tokens)
        assert status == 200 and who["username"] == "alice"


def test_poll_snapshot_on_b_is_dropped_when_a_decides(replicas: Replicas, pair: Pair) -> None:
    add_user(replicas.a, "dora")
    # Start B's decision feed (the first store-backed poll starts it), so that
    # B answers repeat pending polls from memory from now on.
    warm = pair.device_a.start("dora", device_name="warm-up")
    assert _error(pair.device_b.request_token(warm)[1])[0] == "authorization_pending"

    started = pair.device_a.start("dora", device_name="Kitchen TV")
    tokens, body = pair.device_b.request_token(started)
    polled_at = time.monotonic()
    assert tokens is None and _error(body) == ("authorization_pending", "awaiting_user")

    request = pair.phone_a.open(started.verification_uri_complete)
    assert pair.phone_a.deny(request, origin=pair.public) == "denied"
    assert pair.device_b.wait(started, timeout=5)["state"] == "denied"  # no waiting at all

    # The next poll allowed by the interval: B must not answer it from its stale
    # pending snapshot (which it would trust for 60 s without A's announcement).
    time.sleep(max(0.0, polled_at + started.interval + 0.1 - time.monotonic()))
    tokens, body = pair.device_b.request_token(started)
    assert tokens is None and _error(body)[0] == "access_denied"
    with pytest.raises(LoginFailed) as failed:
        pair.device_a.complete(started)
    assert failed.value.error == "access_denied"


class Alternating:
    """The device's transport: every other sealed message goes to the other replica."""

    def __init__(self, public_http: str, a: ServerProcess, b: ServerProcess) -> None:
        self.public = public_http.rstrip("/")
        self.targets = [a.http_url, b.http_url]
        self.sent: dict[str, list[bytes]] = {a.http_url: [], b.http_url: []}
        self._next = 0
        self._inner = HttpTransport()

    def __call__(self, url: str, token: bytes) -> bytes:
        assert url.startswith(self.public + "/"), url
        target = self.targets[self._next % 2]
        self._next += 1
        self.sent[target].append(token)
        return self._inner(target + url[len(self.public) :], token)

    def close(self) -> None:
        self._inner.close()


def test_sealed_messages_alternate_replicas_and_replays_are_refused(
    replicas: Replicas, tmp_path: Path
) -> None:
    a, b = replicas.a, replicas.b
    secret = str(hatchway(a, "device", "provision", "meter-r1")["secret"])
    transport = Alternating(replicas.public_http, a, b)
    device = Device.enroll(
        server=replicas.public_https,  # TLS to A
        device_id="meter-r1",
        secret=secret,
        state_path=tmp_path / "meter-r1.json",
        ca_file=a.ca_file,
        transport=transport,
    )
    try:
        assert device.state.endpoints["messages"] == replicas.public_http + "/m"
        for i in range(10):
            ack = device.send({"kwh": 1.5, "n": i})
            assert ack.in_reply_to is not None
        assert len(transport.sent[a.http_url]) == len(transport.sent[b.http_url]) == 5

        # A token A accepted, replayed at B (and the reverse): one shared window.
        for token, other in (
            (transport.sent[a.http_url][-1], b),
            (transport.sent[a.http_url][0], b),
            (transport.sent[b.http_url][-1], a),
        ):
            answer = httpx.post(other.http_url + "/m", content=token, headers=JOSE)
            assert answer.status_code == 400
            assert answer.json() == {"error": "invalid_message"}

        # A command queued by the operator reaches the device through one
        # replica, and its result is accepted by the other.
        queued = hatchway(b, "device", "command", "meter-r1", '{"op": "set-interval"}')
        command = device.poll()
        assert command is not None and command.cid == queued["cid"]
        device.respond(command, {"ok": True})
        assert device.poll() is None
    finally:
        device.close()
        transport.close()

    store = Store.open(replicas.database_url)
    try:
        stored = store.list_messages("meter-r1", limit=100)
        readings = [m.body["readings"]["n"] for m in stored if m.typ == "hatchway-telemetry+jwt"]
        assert sorted(readings) == list(range(10))  # each once, none of the replays
        result = store.get_command(str(queued["cid"]))
        assert result is not None and result.result is not None
    finally:
        store.close()


def _sign_in(pair: Pair, username: str) -> Tokens:
    """Start on B; the phone's page and SCRAM start on B, its SCRAM finish on A;
    collect on A (with the number the phone showed)."""
    started: DeviceAuthorization = pair.device_b.start(username, device_name="Hall TV")
    request = pair.phone_split.open(started.verification_uri_complete)
    approval = pair.phone_split.approve(request, PASSWORD, origin=pair.public)
    assert approval.status == "approved"
    tokens, body = pair.device_a.request_token(started, match_number=approval.match_number)
    assert tokens is not None, body
    return tokens


def test_revocation_on_one_replica_holds_on_the_other(replicas: Replicas, pair: Pair) -> None:
    add_user(replicas.a, "bob")

    # A retry through the other replica, at once: the same successor, no revocation.
    first = _sign_in(pair, "bob")
    second = pair.device_a.refresh(first)
    assert pair.device_b.refresh(first).refresh_token == second.refresh_token
    assert pair.device_b.whoami(second)[0] == 200
    # Refresh-token reuse: the device moved on (A rotated again), so the old one
    # replayed at B is a copy and revokes the family.
    third = pair.device_a.refresh(second)
    with pytest.raises(LoginFailed) as reused:
        pair.device_b.refresh(first)
    assert reused.value.error == "invalid_grant"
    with pytest.raises(LoginFailed) as revoked:
        pair.device_a.refresh(third)
    assert revoked.value.error == "invalid_grant"
    assert pair.device_a.whoami(third)[0] == 401
    assert pair.device_b.whoami(third)[0] == 401

    # The operator revokes a session with B's configuration; A honours it at once.
    other = _sign_in(pair, "bob")
    status, who = pair.device_a.whoami(other)
    assert status == 200
    assert hatchway(replicas.b, "sessions", "revoke", str(who["session"]))["revoked"] == 1
    assert pair.device_a.whoami(other)[0] == 401
    assert pair.device_b.whoami(other)[0] == 401
    with pytest.raises(LoginFailed) as gone:
        pair.device_a.refresh(other)
    assert gone.value.error == "invalid_grant"


def test_concurrent_refresh_on_both_replicas_then_logout_on_one(
    replicas: Replicas, pair: Pair
) -> None:
    """Issue 8 §3 on PostgreSQL across processes: the same refresh token sent to A
    and B at the same moment (a client retry through a load balancer) gives both
    the same new token and keeps the session; an RFC 7009 logout on B then ends it
    on A too."""
    add_user(replicas.a, "carol")
    first = _sign_in(pair, "carol")
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def refresh(name: str, device: DeviceLoginClient) -> None:
        barrier.wait()
        try:
            results[name] = device.refresh(first)
        except LoginFailed as exc:  # asserted below
            results[name] = exc

    threads = [
        threading.Thread(target=refresh, args=("a", pair.device_a)),
        threading.Thread(target=refresh, args=("b", pair.device_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    a, b = results["a"], results["b"]
    assert isinstance(a, Tokens) and isinstance(b, Tokens), results
    assert a.refresh_token == b.refresh_token != first.refresh_token
    assert pair.device_a.whoami(b)[0] == 200

    pair.device_b.revoke(a)
    assert pair.device_a.whoami(a)[0] == 401
    assert pair.device_a.whoami(b)[0] == 401
    with pytest.raises(LoginFailed):
        pair.device_a.refresh(a)
