"""Two ``hatchway serve`` replicas on PostgreSQL + Redis share every login budget (issue 8 §4).

Both replicas run with ``HATCHWAY_REDIS_URL`` (a fresh key prefix per run) and
``HATCHWAY_TRUSTED_PROXIES=127.0.0.1``: the test stands in for the load
balancer and names the client in ``X-Forwarded-For``, so one test process can
be several clients (without trusted proxies the client IP is the TCP peer and
the header is ignored). The budgets asked for:

* ``HATCHWAY_LOGIN_START_PER_MINUTE=5``: one IP's five device authorizations,
  all on A or split over A and B, succeed; the sixth gets 429 with
  ``Retry-After`` on either replica. Another IP still has its own five.
* the approval page's per-IP lookups (``HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE=3``,
  a burst of 6) run out the same way across replicas, with ``Retry-After``;
* a sealed SCRAM exchange finished on A cannot be finished again on B;
* a device that polls A and then, too soon, B is told `slow_down`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
import redis

from hatchway.login import ScramClient
from tests.login_e2e.conftest import add_user
from tests.replicas.conftest import Replicas, start_replicas
from tests.services import require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

START_PER_MINUTE = 5
ATTEMPTS_PER_MINUTE = 3


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Replicas]:
    url = require_redis()
    prefix = f"hwtest:replicas:{secrets.token_hex(6)}:"
    env = {
        "HATCHWAY_REDIS_URL": url,
        "HATCHWAY_REDIS_PREFIX": prefix,
        "HATCHWAY_TRUSTED_PROXIES": "127.0.0.1",
        "HATCHWAY_LOGIN_START_PER_MINUTE": str(START_PER_MINUTE),
        "HATCHWAY_LOGIN_ATTEMPTS_PER_MINUTE": str(ATTEMPTS_PER_MINUTE),
    }
    try:
        with start_replicas(tmp_path_factory.mktemp("limited"), database_url, env) as both:
            yield both
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


@pytest.fixture
def clients(limited: Replicas) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    a, b = limited.https_client(limited.a), limited.https_client(limited.b)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _start(http: httpx.Client, public: str, ip: str) -> httpx.Response:
    return http.post(
        public + "/oauth/device_authorization",
        data={"client_id": "tv", "login_hint": "alice"},
        headers={"x-forwarded-for": ip},
    )


def test_one_ip_gets_one_start_budget_across_both_replicas(
    limited: Replicas, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    public = limited.public_https
    # Against one replica: five, then 429.
    alone = [_start(a, public, "203.0.113.10").status_code for _ in range(START_PER_MINUTE + 1)]
    assert alone == [200] * START_PER_MINUTE + [429]
    # Split over both: the same five, not ten.
    split = [
        _start((a, b)[n % 2], public, "203.0.113.20").status_code for n in range(START_PER_MINUTE)
    ]
    assert split == [200] * START_PER_MINUTE
    for replica in (a, b):
        refused = _start(replica, public, "203.0.113.20")
        assert refused.status_code == 429
        assert refused.json()["error"] == "slow_down"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Budgets are per client IP: a third address is untouched.
    assert _start(b, public, "203.0.113.30").status_code == 200


def test_page_lookups_share_one_budget_and_say_when_to_retry(
    limited: Replicas, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    page = limited.public_https + "/login?user_code=BCDF-GHJK"
    burst = 2 * ATTEMPTS_PER_MINUTE
    codes = [
        (a, b)[n % 2].get(page, headers={"x-forwarded-for": "198.51.100.7"}).status_code
        for n in range(burst)
    ]
    assert codes == [404] * burst  # an unknown code, looked up: the budget is spent
    for replica in (a, b):
        limited_page = replica.get(page, headers={"x-forwarded-for": "198.51.100.7"})
        assert limited_page.status_code == 429
        assert 1 <= int(limited_page.headers["retry-after"]) <= 60


def test_an_exchange_finished_on_one_replica_is_spent_on_the_other(
    limited: Replicas, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    public = limited.public_https
    add_user(limited.a, "erin")
    started = a.post(
        public + "/oauth/device_authorization",
        data={"client_id": "tv", "login_hint": "erin"},
        headers={"x-forwarded-for": "192.0.2.40"},
    ).json()
    phone = {"x-forwarded-for": "192.0.2.41"}
    page = b.get(started["verification_uri_complete"], headers=phone)
    csrf = page.text.split('data-csrf="', 1)[1].split('"', 1)[0]
    ref = page.text.split('data-session-ref="', 1)[1].split('"', 1)[0]
    scram = ScramClient(ref, "not the password", random=secrets.token_bytes)
    headers = {**phone, "x-csrf-token": csrf}
    start = b.post(
        public + "/login/scram/start",
        json={"user_code": started["user_code"], "client_first": scram.first()},
        headers=headers,
    ).json()
    final = scram.final(start["server_first"])
    body = {"exchange": start["exchange"], "client_final": final}
    # The CSRF cookie set by B's page travels with each client: copy it to A's.
    a.cookies.update(b.cookies)
    first = a.post(public + "/login/scram/finish", json=body, headers=headers)
    assert first.json()["error"] == "access_denied"  # a wrong password, checked once
    replay = b.post(public + "/login/scram/finish", json=body, headers=headers)
    assert replay.status_code == 400
    assert replay.json() == {
        "error": "invalid_request",
        "error_description": "exchange expired; start again",
    }


def test_a_poll_on_one_replica_makes_the_next_one_too_soon_on_the_other(
    limited: Replicas, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    public = limited.public_https
    started = _start(a, public, "192.0.2.60").json()
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": started["device_code"],
        "client_id": "tv",
    }
    first = a.post(public + "/oauth/token", data=form).json()
    assert first["error"] == "authorization_pending"
    # Well inside the 5 s interval, on the other replica: RFC 8628 §3.5 slow_down.
    second = b.post(public + "/oauth/token", data=form).json()
    assert (second["error"], second["interval"]) == ("slow_down", 10)
