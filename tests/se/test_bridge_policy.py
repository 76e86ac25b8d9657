"""The bridge's APDU allow-list (issue 7 item 7) and its message and handshake rules.

* everything hatchway's flow sends — SELECT, GET DATA ``BF21``, chained PSO, MUTUAL or
  INTERNAL AUTHENTICATE, the wrapped applet commands — passes, so SCP11a/b open and
  a secret is provisioned through a policy-filtered transport;
* what a hostile page would send to other applets or the SD (SELECT PIV, VERIFY,
  PUT KEY, MANAGE CHANNEL, logical channels, plain applet commands, CPLC) is answered
  by the bridge with ``6982`` and never reaches the card; the operator can add an AID
  or a command;
* regressions: two ``Origin`` headers (was HTTP 500 and a traceback), ``"id": true``
  (was echoed as an id), ``BridgeStats.origins`` (grew one entry per session).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.sync.client import connect
from websockets.typing import Origin

from hatchway.runtime import SeededRandom
from hatchway.se import (
    HATCHWAY_AID,
    SD_AID,
    SW,
    AppletIns,
    CommandApdu,
    ResponseApdu,
    Scp11Host,
    Scp11Variant,
    SoftCard,
)
from hatchway.se.apdu import chain
from hatchway.se.bridge import (
    MAX_MESSAGE_ID,
    RelayError,
    parse_request,
    set_origin_apdu,
    transmit_whole,
)
from hatchway.se.guard import (
    ApduPolicy,
    Refusal,
    SessionGuard,
    describe,
    parse_aid,
    parse_ins_rule,
)

from .bridge_runner import RecordingCard, running_bridge
from .conftest import NOW, ORIGIN, Pki

PIV_AID = bytes.fromhex("A000000308")
SELECT_APPLET = CommandApdu(0, 0xA4, 4, 0, HATCHWAY_AID, le=256).encode()

HOSTILE = {
    "SELECT PIV": CommandApdu(0, 0xA4, 4, 0, PIV_AID).encode(),
    "SELECT PIV, P2 0C": CommandApdu(0, 0xA4, 4, 0x0C, PIV_AID).encode(),
    "SELECT the ISD": CommandApdu(0, 0xA4, 4, 0, SD_AID).encode(),
    "SELECT by empty name (the default applet)": CommandApdu(0, 0xA4, 4, 0, le=256).encode(),
    "SELECT hatchway on logical channel 1": CommandApdu(1, 0xA4, 4, 0, HATCHWAY_AID).encode(),
    "SELECT hatchway by path": CommandApdu(0, 0xA4, 8, 0, HATCHWAY_AID).encode(),
    "SELECT hatchway, chained": CommandApdu(0x10, 0xA4, 4, 0, HATCHWAY_AID).encode(),
    "SELECT a prefix of the hatchway AID": CommandApdu(0, 0xA4, 4, 0, HATCHWAY_AID[:5]).encode(),
    "VERIFY PIN (PIV)": CommandApdu(0, 0x20, 0, 0x80, b"12345678").encode(),
    "PUT KEY": CommandApdu(0x80, 0xD8, 0, 0x81, bytes(40)).encode(),
    "PUT KEY under SM": CommandApdu(0x84, 0xD8, 0, 0x81, bytes(48)).encode(),
    "INSTALL": CommandApdu(0x80, 0xE6, 0x0C, 0, bytes(20)).encode(),
    "DELETE": CommandApdu(0x80, 0xE4, 0, 0, bytes(8)).encode(),
    "MANAGE CHANNEL open": CommandApdu(0, 0x70, 0, 0, le=1).encode(),
    "GET DATA CPLC": CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=256).encode(),
    "GET DATA under SM": CommandApdu(0x84, 0xCA, 0xBF, 0x21, bytes(8)).encode(),
    "plain STORE SECRET": CommandApdu(0x80, AppletIns.STORE_SECRET, 0, 0, b"x").encode(),
    "GET RESPONSE with P1P2": CommandApdu(0, 0xC0, 1, 0, le=256).encode(),
    "class FF (PC/SC pseudo-APDU)": CommandApdu(0xFF, 0xCA, 0, 0, le=256).encode(),
    "further interindustry class": CommandApdu(0x40, 0xA4, 4, 0, HATCHWAY_AID).encode(),
}


def test_every_hostile_command_is_refused_with_6982() -> None:
    policy = ApduPolicy()
    for name, apdu in HOSTILE.items():
        refusal = policy.check(apdu)
        assert refusal is not None, name
        assert refusal.sw == SW.SECURITY_STATUS_NOT_SATISFIED, name
    assert policy.check(set_origin_apdu(ORIGIN)) is Refusal.SET_ORIGIN
    assert Refusal.SET_ORIGIN.sw == SW.COMMAND_NOT_ALLOWED
    for malformed in (b"\x00\xa4\x04", b"\x00\xa4\x04\x00\x05\x01", b"\x00\xa4\x04\x00\x00\x00"):
        assert policy.check(malformed) is Refusal.MALFORMED
    assert Refusal.MALFORMED.sw == SW.WRONG_LENGTH


@dataclass
class Filtered:
    """The card behind the bridge's policy, as the bridge relays to it."""

    card: SoftCard
    guard: SessionGuard
    refused: list[bytes] = field(default_factory=list)

    def transmit(self, apdu: bytes) -> bytes:
        refusal = self.guard.check(apdu)
        if refusal is not None:
            self.refused.append(apdu)
            return refusal.sw.to_bytes(2, "big")
        answer = self.card.transmit(apdu)
        self.guard.record(apdu, answer)
        return answer

    def reset(self) -> bytes:
        return self.card.reset()


@pytest.mark.parametrize("variant", [Scp11Variant.A, Scp11Variant.B])
def test_the_flow_passes_the_allow_list_untouched(
    card: SoftCard, pki: Pki, variant: Scp11Variant
) -> None:
    """The server's exact batch shape: SELECT, GET DATA BF21, PSO links (short APDUs,
    so chained), AUTHENTICATE; then wrapped applet commands. Nothing is refused."""
    filtered = Filtered(card, SessionGuard(ApduPolicy()))

    def transmit(apdu: bytes) -> bytes:
        return transmit_whole(filtered, apdu)  # 61xx → GET RESPONSE, filtered too

    card.set_origin(ORIGIN)
    host = Scp11Host(
        variant,
        trust_anchor=pki.ca_cert,
        random=SeededRandom(b"host"),
        now=NOW,
        oce_chain=[pki.oce_cert],
        oce_key=pki.oce_key,
        short_apdus=True,
    )
    batch = [SELECT_APPLET, *host.handshake_commands()]
    if variant is Scp11Variant.A:
        assert any(a[0] == 0x90 for a in batch), "the PSO travels chained (CLA 90)"
    answers = [transmit(a) for a in batch]
    assert answers[0].endswith(b"\x90\x00")
    channel = host.receive_responses(answers[1:])
    for ins, data in ((AppletIns.READ_COUNTER, b""), (AppletIns.GET_PUBLIC_KEY, b"")):
        wrapped = channel.wrap(CommandApdu(0x80, ins, 0, 0, data, le=256).encode())
        assert ResponseApdu.parse(channel.unwrap(transmit(wrapped))).sw == SW.OK
    if variant is Scp11Variant.A:
        for cmd in (
            CommandApdu(0x80, AppletIns.STORE_SECRET, 0, 0, bytes(300)),
            CommandApdu(0x80, AppletIns.READ_SECRET, 0, 0, le=256),
        ):
            # A long wrapped command chains (CLA 94): still allowed.
            links = chain(CommandApdu.parse(channel.wrap(cmd.encode())))
            answers = [transmit(link.encode()) for link in links]
            assert ResponseApdu.parse(channel.unwrap(answers[-1])).sw == SW.OK
        assert card.state.secret == bytes(300)
    assert filtered.refused == []


def test_nothing_but_an_allowed_select_reaches_the_default_applet(card: SoftCard) -> None:
    """After its reset a real card has some applet selected by default: the allowed SD
    commands must not reach it before the page selected an allowed applet."""
    piv = parse_aid("A000000308")
    guard = SessionGuard(ApduPolicy.with_operator_rules([piv]))
    filtered = Filtered(card, guard)
    get_store = bytes.fromhex("80cabf2106a6048302130100")
    get_keys = CommandApdu(0x00, 0xCA, 0x00, 0xE0, le=256).encode()
    for apdu in (get_store, get_keys, bytes.fromhex("00c00000")):
        assert filtered.transmit(apdu) == b"\x69\x85"  # 6985: not before the SELECT
    assert filtered.transmit(SELECT_APPLET)[-2:] == b"\x90\x00" and guard.selected
    assert filtered.transmit(get_keys)[-2:] == b"\x90\x00"
    # An allowed AID the card does not hold: 6A82, and the selection is gone.
    assert filtered.transmit(CommandApdu(0, 0xA4, 4, 0, piv).encode()) == b"\x6a\x82"
    assert not guard.selected
    assert filtered.transmit(get_keys) == b"\x69\x85"
    assert filtered.refused == [get_store, get_keys, bytes.fromhex("00c00000"), get_keys]
    assert Refusal.NOT_SELECTED.sw == SW.CONDITIONS_NOT_SATISFIED


def test_operator_can_allow_an_aid_and_a_command() -> None:
    policy = ApduPolicy.with_operator_rules(
        [parse_aid("a000000308")], [parse_ins_rule("CA/9F7F"), parse_ins_rule("20")]
    )
    assert policy.check(HOSTILE["SELECT PIV"]) is None
    assert policy.check(HOSTILE["GET DATA CPLC"]) is None
    assert policy.check(HOSTILE["VERIFY PIN (PIV)"]) is None
    assert policy.check(SELECT_APPLET) is None  # the hatchway AID stays allowed
    assert policy.check(HOSTILE["PUT KEY"]) is Refusal.COMMAND
    assert policy.check(CommandApdu(0x80, 0xCA, 0x00, 0x66).encode()) is Refusal.COMMAND
    assert policy.check(HOSTILE["SELECT hatchway on logical channel 1"]) is Refusal.CLASS
    for bad in ("A4", "1e", "CA/9F", "zz", "CA9F7F", ""):
        with pytest.raises(ValueError):
            parse_ins_rule(bad)
    for bad in ("A00000", "zz", "00" * 17):
        with pytest.raises(ValueError):
            parse_aid(bad)


def test_describe_names_the_command_for_the_log() -> None:
    assert describe(HOSTILE["PUT KEY"]) == "80D8 PUT_KEY"
    assert describe(HOSTILE["SELECT PIV"]) == "00A4 SELECT A000000308"
    assert describe(bytes([0x80, AppletIns.STORE_SECRET])) == "8042 STORE_SECRET"
    assert describe(b"\x00") == "00"


def test_bridge_answers_refused_apdus_itself_and_the_card_never_sees_them(
    card: SoftCard,
) -> None:
    recording = RecordingCard(card)
    with (
        running_bridge(recording, [ORIGIN]) as run,
        connect(run.url, origin=Origin(ORIGIN), open_timeout=5) as ws,
    ):
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        before = len(recording.seen)  # the bridge's own SET ORIGIN
        batch = [apdu.hex() for apdu in HOSTILE.values()] + [SELECT_APPLET.hex()]
        ws.send(json.dumps({"id": 1, "apdus": batch}))
        answer = json.loads(ws.recv(timeout=10))
    assert answer["id"] == 1
    assert answer["responses"][:-1] == ["6982"] * len(HOSTILE)
    assert answer["responses"][-1].endswith("9000")
    assert recording.seen[before:] == [SELECT_APPLET]
    assert run.bridge.stats.refused_apdus == len(HOSTILE)
    warnings = [r for r in run.logs.records if r.name == "hatchway.se.bridge"]
    assert len(warnings) == 1 and "refused 20 APDU(s)" in warnings[0].getMessage()
    assert "80D8 PUT_KEY" not in warnings[0].getMessage()  # only the first 8 are named
    assert "00A4 SELECT A000000308" in warnings[0].getMessage()
    assert run.logs.at_least(logging.ERROR) == []


def raw_handshake(port: int, headers: list[str]) -> bytes:
    request = "\r\n".join(["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers, "", ""])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


UPGRADE = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
]


def test_two_origin_headers_get_403_not_500(card: SoftCard) -> None:
    """Regression: ``headers.get("Origin")`` raised MultipleValuesError → 500."""
    with running_bridge(card, [ORIGIN]) as run:
        for origins in ([ORIGIN, ORIGIN], [ORIGIN, "https://evil.example"], []):
            answer = raw_handshake(run.port, [*UPGRADE, *(f"Origin: {o}" for o in origins)])
            assert answer.startswith(b"HTTP/1.1 403 "), answer[:80]
        # The bridge still serves a proper handshake afterwards.
        with connect(run.url, origin=Origin(ORIGIN), open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "ready"
    assert run.logs.at_least(logging.ERROR) == []
    assert run.bridge.stats.refused_origins == 3


@pytest.mark.parametrize(
    "bad_id", [True, False, None, "7", 1.0, -1, MAX_MESSAGE_ID + 1, [1], {"n": 1}]
)
def test_message_ids_are_integers_only(bad_id: object) -> None:
    """Regression: ``"id": true`` was accepted and echoed as an id."""
    with pytest.raises(RelayError, match="id must be an integer"):
        parse_request(json.dumps({"id": bad_id, "apdus": [SELECT_APPLET.hex()]}))
    assert parse_request(json.dumps({"id": MAX_MESSAGE_ID, "apdus": ["00c00000"]}))[0] == (
        MAX_MESSAGE_ID
    )


def test_id_true_and_nan_get_an_error_reply(card: SoftCard) -> None:
    with (
        running_bridge(card, [ORIGIN]) as run,
        connect(run.url, origin=Origin(ORIGIN), open_timeout=5) as ws,
    ):
        ws.recv(timeout=5)
        for text in (
            '{"id": true, "apdus": ["00c00000"]}',
            '{"id": NaN, "apdus": ["00c00000"]}',
            '{"apdus": ["00c00000"]}',
        ):
            ws.send(text)
            answer = json.loads(ws.recv(timeout=5))
            assert answer["id"] is None and answer["error"].startswith("bad request"), text
        ws.send('{"id": 3, "apdus": ["00c00000"]}')
        assert json.loads(ws.recv(timeout=5)) == {"id": 3, "responses": ["6985"]}


def test_bridge_stats_hold_one_entry_per_allowed_origin(card: SoftCard) -> None:
    """Regression: ``stats.origins`` was a list that grew by one entry per session."""
    other = "https://other.example"
    with running_bridge(card, [ORIGIN, other]) as run:
        for i in range(6):
            origin = ORIGIN if i % 3 else other
            with connect(run.url, origin=Origin(origin), open_timeout=5) as ws:
                ws.recv(timeout=5)
    assert run.bridge.stats.origins == {ORIGIN: 4, other: 2}
    assert run.bridge.stats.sessions == 6


def test_cli_takes_operator_additions_and_refuses_bad_ones(card_path: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "hatchway",
        "se",
        "bridge",
        "--card",
        str(card_path),
        "--allow-origin",
        ORIGIN,
        "--port",
        "0",
        "--json",
    ]
    done = subprocess.run(
        [*base, "--allow-ins", "A4"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "use --allow-aid" in json.loads(done.stdout)["error"]
    proc = subprocess.Popen(
        [*base, "--allow-aid", "a000000308", "--allow-ins", "ca/9f7f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert ready["aids"] == sorted(["A000000308", HATCHWAY_AID.hex().upper()])
    assert ready["extra_commands"] == ["CA/9F7F"]
