"""What only the Redis backend has: a server, TTLs, a namespace, an optional import."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hatchway.config import Settings, settings_from_env
from hatchway.errors import ConfigurationError
from hatchway.limits import LimitsUnavailable, MemoryLimits, limits_from_settings
from hatchway.limits.redis_limits import RedisLimits
from hatchway.login.ratelimit import TokenBucket
from hatchway.server.process import free_port
from tests.limits.conftest import LimitsFactory
from tests.services import require_redis


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require_redis())
    try:
        yield client
    finally:
        client.close()


def test_keys_are_namespaced_and_expire_on_the_server(raw: redis.Redis) -> None:
    url = require_redis()
    a = RedisLimits(url, prefix="hwtest:ns-a:")
    b = RedisLimits(url, prefix="hwtest:ns-b:")
    try:
        policy = TokenBucket(capacity=1, refill_per_second=1 / 60)
        assert a.hit("k", policy, 1_700_000_000.0).allowed
        assert b.hit("k", policy, 1_700_000_000.0).allowed  # another namespace, another budget
        assert not a.hit("k", policy, 1_700_000_000.0).allowed
        assert a.use_once("id", until=1_700_000_120.0, now=1_700_000_000.0)
        a.bump("n", ttl=30)
        for key in (b"hwtest:ns-a:bucket:k", b"hwtest:ns-a:once:id", b"hwtest:ns-a:count:n"):
            ttl = raw.pttl(key)
            assert 0 < ttl <= 60_000 + 120_000 + 1_000, (key, ttl)  # life + skew margin
    finally:
        a.close()
        b.close()
        for key in raw.scan_iter(match="hwtest:ns-*"):
            raw.delete(key)


def test_a_dead_redis_fails_closed() -> None:
    limits = RedisLimits(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(LimitsUnavailable):
            limits.hit("k", TokenBucket(capacity=5, refill_per_second=1), 1_700_000_000.0)
        with pytest.raises(LimitsUnavailable):
            limits.use_once("x", until=2e9, now=1.7e9)
    finally:
        limits.close()
    with pytest.raises(LimitsUnavailable):  # and a closed one is not used again
        limits.load("k")


def test_damaged_values_count_as_no_history(backend: LimitsFactory) -> None:
    from hatchway.flows.login.guard import PasswordGuard

    limits = backend()
    guard = PasswordGuard(limits=limits)
    limits.swap("guard:account:mallory", None, "not json", ttl=60)
    assert guard.check(account="mallory", ip="192.0.2.1", session="s", now=1.7e9).allowed
    guard.record_failure(account="mallory", ip="192.0.2.1", session="s", now=1.7e9)
    assert limits.load("guard:account:mallory") != "not json"


def test_the_backend_follows_the_url() -> None:
    assert isinstance(limits_from_settings(Settings()), MemoryLimits)
    settings = settings_from_env({"HATCHWAY_REDIS_URL": "redis://127.0.0.1:1/0"})
    made = limits_from_settings(settings)
    try:
        assert isinstance(made, RedisLimits)
        assert made.prefix == "hatchway:"
    finally:
        made.close()
    with pytest.raises(ConfigurationError, match="HATCHWAY_REDIS_URL"):
        settings_from_env({"HATCHWAY_REDIS_URL": "http://127.0.0.1:6379"})
    with pytest.raises(ConfigurationError, match="HATCHWAY_REDIS_PREFIX"):
        settings_from_env({"HATCHWAY_REDIS_PREFIX": "x" * 65})


def test_plain_install_never_imports_redis() -> None:
    """Without a URL nothing imports redis; with one but no package, one clear line."""
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"  # as if the package were not installed
        "from hatchway.config import Settings\n"
        "from hatchway.limits import limits_from_settings\n"
        "import hatchway.server.context\n"
        "limits_from_settings(Settings())\n"
        "try:\n"
        "    limits_from_settings(Settings(redis_url='redis://127.0.0.1:6379/0'))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == (
        "ConfigurationError HATCHWAY_REDIS_URL is set but the redis package is missing: "
        "pip install 'hatchway[redis]'"
    )


def test_serve_without_the_package_stops_with_one_line_naming_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "from hatchway.cli.main import main\n"
        f"sys.argv = ['hatchway', 'serve', '--data-dir', {str(tmp_path / 'data')!r}]\n"
        "main()\n"
    )
    env = {
        **os.environ,
        "HATCHWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "HATCHWAY_HTTPS_PORT": str(free_port()),
        "HATCHWAY_HTTP_PORT": str(free_port()),
        "HATCHWAY_LOG_LEVEL": "warning",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: HATCHWAY_REDIS_URL is set but the redis package is missing: "
        "pip install 'hatchway[redis]'"
    ]


def test_the_login_flow_fails_closed_when_redis_is_down(tmp_path: Path) -> None:
    """Starts answer 503, page lookups 'too many attempts': never an unlimited yes."""
    from hatchway.flows.login.approval import ApprovalService
    from hatchway.flows.login.common import LoginRefused
    from hatchway.flows.login.service import LoginService
    from hatchway.runtime import FrozenClock, SeededRandom
    from tests.login.world import login_world

    clock = FrozenClock()
    with login_world(tmp_path, clock) as ctx:
        dead = RedisLimits(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        try:
            login = LoginService(
                store=ctx.store,
                identity=ctx.identity,
                settings=ctx.settings,
                clock=clock,
                random=SeededRandom(),
                limits=dead,
            )
            with pytest.raises(LoginRefused) as refused:
                login.start(
                    {"client_id": "tv", "login_hint": "alice"}, ip="192.0.2.1", user_agent=""
                )
            assert (refused.value.status_hint, refused.value.error) == (
                503,
                "temporarily_unavailable",
            )
            started = ctx.login.start(
                {"client_id": "tv", "login_hint": "alice"}, ip="192.0.2.1", user_agent=""
            )
            page = ApprovalService(login).page(started.user_code, ip="198.51.100.1")
            assert page.status == "limited" and page.retry_after > 0
            with pytest.raises(LoginRefused) as finish:
                ApprovalService(login).scram_finish(
                    exchange="x.y", client_final="c", ip="198.51.100.1", user_agent=""
                )
            assert finish.value.status_hint == 503
        finally:
            dead.close()
