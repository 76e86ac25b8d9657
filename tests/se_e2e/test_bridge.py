"""The bridge's rules (issue 4 §3), against a real ``hatchway se bridge`` subprocess.

The origin comes only from the WebSocket handshake's ``Origin`` header: an origin
outside the allow-list is refused with HTTP 403 before any APDU moves; a SET ORIGIN
sent by the page is dropped (answered 6986 by the bridge, never forwarded); an
``origin`` field written into a message changes nothing; one session per card.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from hatchway.se.bridge import set_origin_apdu
from hatchway.se.relay import BridgeProcess, PageClient, relay
from hatchway.server.process import ServerProcess

from .harness import card_secret

pytestmark = pytest.mark.e2e

EVIL = "https://hatchway.example.net"


def test_origin_not_allowed_is_refused_at_the_handshake(
    server: ServerProcess, card_file: Path
) -> None:
    with BridgeProcess(card_file, [server.https_url]) as bridge:
        for origin in (EVIL, "null", server.https_url.replace("https", "http")):
            with pytest.raises(InvalidStatus) as refused:
                connect(bridge.url, origin=Origin(origin), open_timeout=5)
            assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):  # no Origin header at all
            connect(bridge.url, open_timeout=5)


def test_allowed_origin_is_serialised_before_comparison(
    server: ServerProcess, card_file: Path
) -> None:
    upper = server.https_url.replace("https://localhost", "HTTPS://LocalHost") + "/"
    with (
        BridgeProcess(card_file, [upper]) as bridge,
        connect(bridge.url, origin=Origin(server.https_url), open_timeout=5) as ws,
    ):
        assert json.loads(ws.recv(timeout=5))["origin"] == server.https_url


def test_set_origin_from_the_page_is_dropped(
    server: ServerProcess, card_file: Path, tls: ssl.SSLContext
) -> None:
    forged = set_origin_apdu(EVIL)
    chained = bytes([forged[0] | 0x10]) + forged[1:]
    with BridgeProcess(card_file, [server.https_url]) as bridge:
        with connect(bridge.url, origin=Origin(server.https_url), open_timeout=5) as ws:
            ws.recv(timeout=5)
            answers = relay(ws, 1, [forged.hex(), chained.hex(), "801e0000"])
        assert answers == ["6986", "6986", "6986"]
        # The card kept the header's origin: the genuine flow still opens the channel.
        with PageClient(server.https_url, bridge.url, origin=server.https_url, verify=tls) as page:
            assert page.run().ok
    assert card_secret(card_file) is not None


def test_origin_field_in_a_message_is_ignored(
    server: ServerProcess, card_file: Path, tls: ssl.SSLContext
) -> None:
    """A page on an allowed-but-wrong origin cannot claim the genuine one in a message."""
    with (
        BridgeProcess(card_file, [server.https_url, EVIL]) as bridge,
        connect(bridge.url, origin=Origin(EVIL), open_timeout=5) as ws,
    ):
        assert json.loads(ws.recv(timeout=5))["origin"] == EVIL
        import httpx

        with httpx.Client(verify=tls, headers={"Origin": server.https_url}) as http:
            # (A phishing page's requests reach the server through the attacker's
            # proxy, which can set any Origin; the server's CSRF check is no defence.)
            step = http.post(server.https_url + "/se/api/start", json={}).json()
            ws.send(
                json.dumps(
                    {
                        "id": 1,
                        "apdus": step["apdus"],
                        "origin": server.https_url,
                        "type": "set-origin",
                    }
                )
            )
            answer = json.loads(ws.recv(timeout=10))
            assert set(answer) == {"id", "responses"}
            refused = http.post(
                server.https_url + step["next"],
                json={"session": step["session"], "responses": answer["responses"]},
            )
    assert refused.status_code == 403
    assert refused.json()["sw"] == "6A88"
    assert card_secret(card_file) is None


def test_one_session_per_card_and_bad_requests(server: ServerProcess, card_file: Path) -> None:
    with BridgeProcess(card_file, [server.https_url]) as bridge:
        with connect(bridge.url, origin=Origin(server.https_url), open_timeout=5) as ws:
            ws.recv(timeout=5)
            with pytest.raises(InvalidStatus) as busy:
                connect(bridge.url, origin=Origin(server.https_url), open_timeout=5)
            assert busy.value.response.status_code == 409
            for bad in (
                "not json",
                "[]",
                '{"apdus": []}',
                '{"apdus": ["zz"]}',
                '{"apdus": ["00"]}',
                json.dumps({"apdus": ["00a40400"] * 65}),
            ):
                ws.send(bad)
                assert "error" in json.loads(ws.recv(timeout=5))
        # The session ended with the connection: the next page gets the card.
        with connect(bridge.url, origin=Origin(server.https_url), open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "ready"
