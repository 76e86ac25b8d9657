"""Issue 8 §5.6: what the requester chose cannot dress up the approval page.

Checked on the rendered HTML: look-alike quotes (❞ ❝ ″ 〝 〟 …) never reach it,
bidi controls are refused at device authorization, a ``login_hint`` starting
with U+202E does not put it on the page, and every requester-chosen string
(masked name, device name, address) is escaped and isolated in ``<bdi>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import LoginRefused, has_bidi_controls, sanitize_device_name
from hatchway.runtime import FrozenClock
from hatchway.server.context import ServerContext
from hatchway.server.login_pages import approval_page
from tests.login.world import login_world

LOOK_ALIKE_QUOTES = "❞❝″〝〟‶‷❛❜＂＇ʺ˝״🙶🙷🙸‹›"
BIDI = ["\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069",
        "\u200e", "\u200f", "\u061c"]  # fmt: skip


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock, HATCHWAY_LOGIN_START_PER_MINUTE="600") as context:
        yield context


def _page(ctx: ServerContext, *, login_hint: str = "alice", device_name: str = "TV") -> str:
    started = ctx.login.start(
        {"client_id": "tv", "login_hint": login_hint, "device_name": device_name},
        ip="192.0.2.1",
        user_agent="tv/1",
    )
    view = ApprovalService(ctx.login).page(started.user_code, ip="198.51.100.1")
    assert view.status == "pending"
    return approval_page(view, "csrf-token")


def _visible_text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


@pytest.mark.parametrize("quote", list(LOOK_ALIKE_QUOTES))
def test_look_alike_quotes_never_reach_the_page(ctx: ServerContext, quote: str) -> None:
    name = f"Your phone{quote} — verified by hatchway. {quote}TV"
    html = _page(ctx, device_name=name)
    text = _visible_text(html)
    assert quote not in text
    assert "verified by hatchway" in text  # the words stay, inside the page's own quotes
    assert text.count("“") == text.count("”") == 2  # the page's quotes, and only those


@pytest.mark.parametrize("control", BIDI)
def test_bidi_controls_in_a_device_name_are_refused(ctx: ServerContext, control: str) -> None:
    with pytest.raises(LoginRefused) as refused:
        _page(ctx, device_name=f"TV{control} verified")
    assert refused.value.error == "invalid_request"


def test_a_client_id_standing_in_as_the_name_is_held_to_the_same_rule(ctx: ServerContext) -> None:
    with pytest.raises(LoginRefused):
        ctx.login.start(
            {"client_id": "tv\u202e", "login_hint": "alice"}, ip="192.0.2.1", user_agent=""
        )


def test_right_to_left_names_are_isolated_in_bdi(ctx: ServerContext) -> None:
    name = "טלוויזיה בסלון"  # a legitimate Hebrew name: kept, but isolated
    html = _page(ctx, device_name=name)
    assert f"“<bdi id=device>{name}</bdi>”" in html
    assert f"“<bdi>{name}</bdi>”" in html
    assert html.count(name) == 2  # nowhere outside an isolate


def test_every_requester_chosen_string_is_escaped_and_isolated(ctx: ServerContext) -> None:
    html = _page(ctx, login_hint="<b>eve", device_name="<script>x</script> & TV")
    assert "<script>x" not in html and "<b>" not in html
    head = re.search(r"<h1>(.*?)</h1>", html)
    origin = re.search(r"<p id=origin>(.*?)</p>", html)
    assert head and origin
    assert "<bdi id=who>&lt;•••e</bdi>" in head.group(1)
    assert "<bdi id=device>&lt;script&gt;x&lt;/script&gt; &amp; TV</bdi>" in head.group(1)
    assert "from <bdi>192.0.2.1</bdi>" in origin.group(1)
    # Outside the isolates only the page's own words remain.
    outside = re.sub(r"<bdi[^>]*>.*?</bdi>", "", origin.group(1))
    outside = re.sub(r"<time[^>]*>.*?</time>", "", outside)
    assert _visible_text(outside) == "Sign in as  on a device calling itself “” — started  from "


def test_a_login_hint_starting_with_rlo_shows_no_rlo(ctx: ServerContext) -> None:
    html = _page(ctx, login_hint="\u202eecila")
    assert not has_bidi_controls(html)
    assert "<bdi id=who>e•••a</bdi>" in html


@given(st.text(max_size=120))
def test_sanitized_names_hold_no_quotes_controls_or_bidi(name: str) -> None:
    cleaned = sanitize_device_name(name)
    assert len(cleaned) <= 40
    assert not has_bidi_controls(cleaned)
    assert not any(q in cleaned for q in LOOK_ALIKE_QUOTES + "\"'“”„‟«»")
    assert not re.search(r"[\x00-\x1f\x7f\u200b-\u200f]", cleaned)
