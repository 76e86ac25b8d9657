"""Attacks on confirm-code against a real server, no browser (issue 8 §2).

The "typed" shortcut must not be forgeable: a proof from another browser, for
another code, made up, or not even ASCII, is treated as no proof, so the pick
is required and its absence cancels the request. The QR page's pick cannot be
skipped by posting straight to ``scram/start``.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hatchway.login.phone import ApprovalFailed, PendingRequest, PhoneClient
from hatchway.server.process import ServerProcess
from tests.login_e2e.conftest import PASSWORD, add_user

pytestmark = pytest.mark.e2e

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _browser(server: ServerProcess) -> httpx.Client:
    """A fresh cookie jar: one phone browser."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    return httpx.Client(base_url=server.https_url, verify=context, timeout=30)


@pytest.fixture
def phones(server: ServerProcess) -> Iterator[tuple[PhoneClient, PhoneClient]]:
    first, second = _browser(server), _browser(server)
    try:
        yield PhoneClient(first), PhoneClient(second)
    finally:
        first.close()
        second.close()


def _start(https: httpx.Client, username: str) -> dict[str, Any]:
    answer = https.post(
        "/oauth/device_authorization", data={"client_id": "tv", "login_hint": username}
    )
    assert answer.status_code == 200, answer.text
    started: dict[str, Any] = answer.json()
    return started


def _outcome(https: httpx.Client, started: dict[str, Any]) -> str:
    body = https.post(
        "/oauth/token",
        data={"grant_type": DEVICE_GRANT, "device_code": started["device_code"], "client_id": "tv"},
    ).json()
    return str(body.get("error", "tokens"))


def _refused(phone: PhoneClient, request: PendingRequest, server: ServerProcess) -> str:
    with pytest.raises(ApprovalFailed) as refused:
        phone.approve(request, PASSWORD, origin=server.https_url, shown_code="")
    return refused.value.error


def test_typed_proof_works_only_where_it_was_made(
    server: ServerProcess, https: httpx.Client, phones: tuple[PhoneClient, PhoneClient]
) -> None:
    add_user(server, "vera")
    mine, other = phones
    started = _start(https, "vera")
    typed = mine.open_typed(started["verification_uri"], started["user_code"])
    assert typed.typed and not typed.choices  # typed: no pick offered
    # The same proof replayed from another browser (another cookie) is no proof.
    qr = other.open(started["verification_uri_complete"])
    assert len(qr.choices) == 3
    stolen = dataclasses.replace(qr, typed=typed.typed, choices=())
    assert _refused(other, stolen, server) == "wrong_code"
    assert _outcome(https, started) == "access_denied"


@pytest.mark.parametrize("forged", ["0" * 64, "é" * 8, "\U0001f600", "x" * 5000])
def test_made_up_proofs_are_no_proof(
    server: ServerProcess,
    https: httpx.Client,
    phones: tuple[PhoneClient, PhoneClient],
    forged: str,
) -> None:
    phone, _ = phones
    started = _start(https, "wes")  # need not exist: the pick comes before the password
    qr = phone.open(started["verification_uri_complete"])
    error = _refused(phone, dataclasses.replace(qr, typed=forged, choices=()), server)
    # Oversized input is refused as malformed before anything else; never a 500.
    assert error in ("wrong_code", "invalid_request")
    if error == "wrong_code":
        assert _outcome(https, started) == "access_denied"


def test_proof_for_one_code_does_not_open_another(
    server: ServerProcess, https: httpx.Client, phones: tuple[PhoneClient, PhoneClient]
) -> None:
    add_user(server, "xena")
    phone, _ = phones
    first, second = _start(https, "xena"), _start(https, "xena")
    typed_first = phone.open_typed(first["verification_uri"], first["user_code"])
    qr_second = phone.open(second["verification_uri_complete"])
    forged = dataclasses.replace(qr_second, typed=typed_first.typed, choices=())
    assert _refused(phone, forged, server) == "wrong_code"
    assert _outcome(https, second) == "access_denied"
    # The first, really typed, is unaffected.
    assert phone.approve(typed_first, PASSWORD, origin=server.https_url).status == "approved"
    assert _outcome(https, first) == "tokens"


def test_code_entry_post_needs_its_csrf_token(server: ServerProcess, https: httpx.Client) -> None:
    add_user(server, "yuri")
    started = _start(https, "yuri")
    # A cross-site form that posts a code (no token, foreign Origin) gets the
    # entry page again, never an approval page with a typed proof.
    answer = https.post(
        "/login",
        data={"user_code": started["user_code"]},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    assert "data-typed" not in answer.text and "Enter the code" in answer.text
