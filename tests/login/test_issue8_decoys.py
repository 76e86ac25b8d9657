"""Issue 8 §5.5: a decoy's ``i=`` always matches the real accounts' counts.

Before: decoys used the count ``users add`` last recorded (or the configured
one), so one account added with ``--iterations 4096`` made every other account
stand out: unknown names answered ``i=4096``, real ones ``i=600000``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.config import Settings
from hatchway.flows.login.approval import ApprovalService
from hatchway.login import ScramClient, decoy_iterations, make_verifier
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from tests.login.world import login_world

_ADDRESSES = itertools.count()


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:  # alice at 4096; settings say 600000
        yield context


def _iterations(ctx: ServerContext, approval: ApprovalService, username: str) -> int:
    # A new device address per start: the start budget is per IP (30 a minute).
    n = next(_ADDRESSES)
    ip = f"10.0.{n // 250}.{n % 250 + 1}"
    started = ctx.login.start({"client_id": "tv", "login_hint": username}, ip=ip, user_agent="tv")
    session = ctx.store.get_login_session_by_user_code(started.user_code)
    assert session is not None
    client = ScramClient(session.reference, "guess", random=SeededRandom(b"p"))
    server_first, _ = approval.scram_start(
        user_code=started.user_code, client_first=client.first(), ip="198.51.100.1"
    )
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    return int(fields["i"])


def test_decoys_show_the_count_real_accounts_use(ctx: ServerContext) -> None:
    approval = ApprovalService(ctx.login)
    assert ctx.settings.login_scram_iterations == 600_000  # what the old decoys showed
    real = _iterations(ctx, approval, "alice")
    assert real == 4096
    for name in ("zed", "Zed", "mallory", "ａｌｉｃｅｘ"):
        assert _iterations(ctx, approval, name) == real


def test_split_accounts_give_decoys_the_same_distribution(
    tmp_path: Path, clock: FrozenClock
) -> None:
    with login_world(tmp_path, clock) as ctx:
        bob = make_verifier("x", random=SeededRandom(b"bob"), iterations=5000)
        ctx.store.add_user("bob", bob, now=0)  # as old data could have it
        approval = ApprovalService(ctx.login)
        assert _iterations(ctx, approval, "bob") == 5000
        names = [f"nobody{n}" for n in range(200)]
        first = {n: _iterations(ctx, approval, n) for n in names}
        assert set(first.values()) == {4096, 5000}
        assert 0.3 < Counter(first.values())[5000] / len(names) < 0.7  # 1 : 1 like the real
        assert all(_iterations(ctx, approval, n) == first[n] for n in names[:20])  # stable


@given(
    counts=st.dictionaries(st.integers(4096, 10**7), st.integers(0, 50), min_size=1, max_size=5),
    name=st.text(max_size=20),
)
def test_decoy_iterations_only_ever_shows_a_real_count(counts: dict[int, int], name: str) -> None:
    live = {i for i, n in counts.items() if n > 0}
    if not live:
        with pytest.raises(ValueError):
            decoy_iterations(name, secret=b"k" * 32, counts=counts)
        return
    picked = decoy_iterations(name, secret=b"k" * 32, counts=counts)
    assert picked in live
    assert picked == decoy_iterations(name, secret=b"k" * 32, counts=counts)
    if len(live) == 1:
        assert picked == next(iter(live))


def test_counts_come_from_the_accounts_not_the_settings(tmp_path: Path, clock: FrozenClock) -> None:
    settings = Settings(data_dir=tmp_path / "empty")
    ctx = ServerContext.create(settings, clock=clock, random=SeededRandom())
    try:
        assert ctx.login.iteration_counts() == {600_000: 1}  # no accounts: what add would use
        verifier = make_verifier("x", random=SeededRandom(), iterations=4096)
        ctx.store.add_user("carol", verifier, now=clock())
        clock.advance(31)  # past the short cache
        assert ctx.login.iteration_counts() == {4096: 1}
    finally:
        ctx.close()


def _users_add(data: Path, name: str, *extra: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hatchway",
            "users",
            "add",
            name,
            "--password-stdin",
            "--json",
            *extra,
        ],
        input="pencil\n",
        text=True,
        capture_output=True,
        timeout=120,
        env={"HATCHWAY_DATA_DIR": str(data), "PATH": "/usr/bin:/bin", **_pythonpath()},
    )
    line = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return done.returncode, json.loads(line)


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")}


def test_users_add_refuses_a_count_that_would_split_the_accounts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rc, _ = _users_add(data, "alice", "--iterations", "4096")
    assert rc == 0
    rc, out = _users_add(data, "bob", "--iterations", "5000")
    assert rc == 2
    assert "--iterations 5000 differs" in str(out["error"]) and "4096" in str(out["error"])
    rc, out = _users_add(data, "bob")  # the configured 600000 would split them too
    assert rc == 2 and "HATCHWAY_LOGIN_SCRAM_ITERATIONS 600000" in str(out["error"])
    rc, out = _users_add(data, "bob", "--iterations", "4096")
    assert rc == 0 and out["username"] == "bob"
