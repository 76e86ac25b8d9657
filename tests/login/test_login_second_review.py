"""Regressions for a second security review of the login flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.config import Settings, validate
from hatchway.errors import ConfigurationError
from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import sanitize_device_name
from hatchway.login.ratelimit import ip_key
from hatchway.runtime import FrozenClock
from tests.login.test_login_flow_service import _approve, _start, _token
from tests.login.world import PASSWORD, login_world


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("198.51.100.23", "198.51.100.23"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.23", "198.51.100.23"),
        ("unknown", "unknown"),
    ],
)
def test_rate_limit_keys_group_an_ipv6_subscriber(ip: str, key: str) -> None:
    """One /64 is one subscriber: it must not get 2**64 separate budgets."""
    assert ip_key(ip) == key


def test_addresses_in_one_slash64_share_a_key() -> None:
    assert len({ip_key(f"2001:db8:0:1::{i:x}") for i in range(1000)}) == 1


@pytest.mark.parametrize("value", ["*", "10.0.0.5,*", "proxy.example", "10.0.0.300"])
def test_trusting_every_proxy_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        validate(Settings(trusted_proxies=value))


@pytest.mark.parametrize("value", ["", "10.0.0.5", "10.0.0.5, 10.0.0.6", "10.0.0.0/24,::1"])
def test_named_proxies_are_accepted(value: str) -> None:
    validate(Settings(trusted_proxies=value))


@pytest.mark.parametrize(
    "name",
    [
        "Your phone\u201d \u2014 verified by hatchway. \u201cTV",
        'Your phone" - verified. "TV',
        "Your phone\u00bb verified \u00abTV",
    ],
)
def test_a_device_name_cannot_close_the_pages_quote(name: str) -> None:
    cleaned = sanitize_device_name(name)
    assert not any(q in cleaned for q in "\"\u201c\u201d\u00ab\u00bb'")
    assert "verified" in cleaned  # the words stay, but inside the page's own quote


def test_session_ids_never_look_like_cli_options(tmp_path: Path) -> None:
    """`hatchway sessions revoke ID` takes the id as an argument: it must not start with '-'."""
    clock = FrozenClock()
    with login_world(tmp_path, clock) as ctx:
        approval = ApprovalService(ctx.login)
        for _ in range(40):
            started = _start(ctx.login)
            _approve(approval, started, PASSWORD)
            clock.advance(10)
            tokens = _token(ctx.login, started.device_code)
            sid = str(ctx.login.verify_access_token(str(tokens["access_token"]))["sid"])
            assert not sid.startswith("-")
            assert set(sid) <= set("0123456789abcdef")
