"""The confirm-code core (login/antiphishing.py) and the scope and Basic-credential
parsers, with hypothesis properties (STYLE.md §11: every parser gets one)."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.clients import ClientRecord, ScopeRefused, grant_scope, parse_scope
from hatchway.flows.clients import parse_basic_authorization
from hatchway.flows.login.common import LoginRefused
from hatchway.login import SessionState, new_session, new_user_code, normalize_user_code
from hatchway.login.antiphishing import (
    CONFIRM_CODE_CHOICES,
    check_code_pick,
    needs_code_pick,
    new_code_choices,
)
from hatchway.runtime import SeededRandom


def _session(user_code: str, choices: tuple[str, ...] | None) -> object:
    return new_session(
        device_code_hash=hashlib.sha256(user_code.encode()).digest(),
        user_code=user_code,
        username="alice",
        client_id="tv",
        scope="",
        device_name="TV",
        initiator_ip="::1",
        initiator_user_agent="ua",
        now=0.0,
        code_choices=choices,
    )


@given(st.binary(min_size=1, max_size=16))
def test_choices_are_distinct_well_formed_and_include_the_code(seed: bytes) -> None:
    rng = SeededRandom(seed)
    code = new_user_code(rng)
    choices = new_code_choices(code, rng)
    assert len(choices) == CONFIRM_CODE_CHOICES == len(set(choices))
    assert code in choices
    assert all(normalize_user_code(c) == c for c in choices)


def test_real_code_position_is_spread_evenly() -> None:
    positions = Counter(
        new_code_choices("BDFG-HJKL", SeededRandom(n.to_bytes(4, "big"))).index("BDFG-HJKL")
        for n in range(3000)
    )
    assert set(positions) == {0, 1, 2}
    assert all(900 < count < 1100 for count in positions.values()), positions


def test_pick_rules() -> None:
    choices = new_code_choices("BDFG-HJKL", SeededRandom())
    session = _session("BDFG-HJKL", choices)
    assert needs_code_pick(session, typed=False)  # type: ignore[arg-type]
    assert not needs_code_pick(session, typed=True)  # type: ignore[arg-type]
    right = check_code_pick(session, "bdfg hjkl", now=1.0)  # type: ignore[arg-type]
    assert right.correct and right.session is session
    wrong = check_code_pick(session, "BCDF-GHJK", now=1.0)  # type: ignore[arg-type]
    assert not wrong.correct and wrong.session.state is SessionState.DENIED
    assert wrong.session.decided_at == 1.0
    plain = _session("BDFG-HJKL", None)
    assert not needs_code_pick(plain, typed=False)  # type: ignore[arg-type]
    assert check_code_pick(plain, None, now=1.0).correct  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "choices", [("BCDF-GHJK", "BCDF-GHJL"), ("BDFG-HJKL", "BDFG-HJKL"), ("BDFG-HJKL",)]
)
def test_sessions_refuse_unusable_choices(choices: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        _session("BDFG-HJKL", choices)


@given(st.text(max_size=300))
def test_scope_parser_accepts_only_scope_tokens(text: str) -> None:
    try:
        tokens = parse_scope(text)
    except ScopeRefused:
        return
    assert len(tokens) == len(set(tokens)) <= 32
    for token in tokens:
        assert token and all(0x21 <= ord(c) <= 0x7E and c not in '"\\\\' for c in token)
    assert " ".join(tokens).split() == list(tokens)


@given(st.lists(st.sampled_from(["profile", "offline_access", "admin", "x"]), max_size=6))
def test_grant_never_exceeds_the_registration(asked: list[str]) -> None:
    client = ClientRecord(client_id="tv", name="TV", scopes=("profile", "offline_access"))
    try:
        granted = grant_scope(client, " ".join(asked))
    except ScopeRefused:
        assert set(asked) - set(client.scopes)
        return
    assert set(granted.split()) <= set(client.scopes)
    assert granted.split() == (list(dict.fromkeys(asked)) or list(client.scopes))


@given(st.binary(max_size=200))
def test_basic_parser_never_crashes(raw: bytes) -> None:
    header = "Basic " + base64.b64encode(raw).decode()
    try:
        client_id, secret = parse_basic_authorization(header)
    except LoginRefused as exc:
        assert (exc.error, exc.status_hint) == ("invalid_client", 401)
        return
    assert isinstance(client_id, str) and isinstance(secret, str)


def test_basic_parser_decodes_form_encoding() -> None:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Base64.
    encoded = base64.b64encode(b"my%3Aclient:s%2Bcret+x").decode()
    assert parse_basic_authorization(f"Basic {encoded}") == ("my:client", "s+cret x")


def test_retired_number_matching_variable_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hatchway.config import Settings, settings_from_env

    with caplog.at_level("WARNING", logger="hatchway.config"):
        settings = settings_from_env({"HATCHWAY_LOGIN_NUMBER_MATCHING": "true"})
    assert settings == Settings(data_dir=settings.data_dir)
    assert "HATCHWAY_LOGIN_NUMBER_MATCHING is ignored" in caplog.text
    assert "--anti-phishing" in caplog.text
