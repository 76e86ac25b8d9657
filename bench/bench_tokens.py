"""Issue 8 §3: what checking and refreshing tokens costs, against a same-run baseline.

In process, on the embedded SQLite store in a temp dir (no HTTP), so the ratios
show the work each check adds, not network noise:

* baseline: the offline check a resource server does (signature, typ, iss,
  aud, exp: ``LoginService.access_token_claims``);
* ``verify_access_token`` (whoami): that plus the session, revoked-jti and
  account reads;
* introspection of an access token (RFC 7662), as a confidential client;
* a refresh (rotation, sealing the successor) and a retry within the reuse
  interval (opening the sealed successor, no new row).

    .venv/bin/python bench/bench_tokens.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hatchway.clients import AuthMethod, new_client
from hatchway.config import settings_from_env
from hatchway.flows.oauth.introspection import TokenIntrospection
from hatchway.login import IssueTokens, make_verifier
from hatchway.runtime import SeededRandom, system_clock
from hatchway.server.context import ServerContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import median_us


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_env({"HATCHWAY_DATA_DIR": str(Path(tmp) / "data")})
        ctx = ServerContext.create(settings)
        try:
            run(ctx, args.number, args.repeat)
        finally:
            ctx.close()


def run(ctx: ServerContext, number: int, repeat: int) -> None:
    rng = SeededRandom(b"bench")
    ctx.store.add_user("alice", make_verifier("pw", random=rng, iterations=4096), now=0)
    tv, _ = new_client("tv", "TV", now=0, random=rng)
    rs, secret = new_client(
        "rs", "RS", now=0, random=rng, auth_method=AuthMethod.CLIENT_SECRET_POST
    )
    ctx.store.add_client(tv)
    ctx.store.add_client(rs)
    tokens = ctx.login._mint(
        IssueTokens(username="alice", client_id="tv", scope="", device_name="TV"),
        now=system_clock(),
        client=tv,
    )
    access = tokens["access_token"]
    resource_server = ctx.login.client_auth.authenticate(
        None, {"client_id": "rs", "client_secret": secret or ""}, allow_public=False
    )
    introspection = TokenIntrospection(ctx.login)
    current = [tokens["refresh_token"]]

    def refresh() -> None:
        form = {"grant_type": "refresh_token", "refresh_token": current[0], "client_id": "tv"}
        current[0] = ctx.login.token(form, ip="127.0.0.1", user_agent="bench")["refresh_token"]

    previous = current[0]
    refresh()
    retried = previous

    def retry() -> None:
        form = {"grant_type": "refresh_token", "refresh_token": retried, "client_id": "tv"}
        ctx.login.token(form, ip="127.0.0.1", user_agent="bench")

    rows = [
        ("offline check (baseline)", lambda: ctx.login.access_token_claims(access)),
        ("verify_access_token (whoami)", lambda: ctx.login.verify_access_token(access)),
        (
            "introspect access token",
            lambda: introspection.introspect(resource_server, access, None),
        ),
        ("refresh (rotate + seal)", refresh),
        ("retry within interval", retry),
    ]
    baseline = None
    print("| operation | median | × offline check |")
    print("|---|---|---|")
    for name, fn in rows:
        n = number if "refresh" not in name and "retry" not in name else max(20, number // 4)
        if name.startswith("retry"):
            # A retry is only a retry for 10 s after its rotation, and only while the
            # successor is unused: time a small batch right after a fresh rotation.
            refresh_then = current[0]
            form = {"grant_type": "refresh_token", "refresh_token": refresh_then, "client_id": "tv"}
            ctx.login.token(form, ip="127.0.0.1", user_agent="bench")
            retried = refresh_then
            n = 20
        us = median_us(fn, number=n, repeat=repeat)
        baseline = baseline or us
        print(f"| {name} | {us:,.0f} µs | {us / baseline:.1f} |")


if __name__ == "__main__":
    main()
