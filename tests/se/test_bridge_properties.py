"""Property tests: hostile frames and handshakes against a real bridge (issue 7 part 3).

A real ``Bridge`` listens on loopback in front of an emulated card (``bridge_runner``).
Hypothesis sends it random, truncated, bit-flipped, lone-surrogate, NaN, deeply nested
and oversized frames, and handshakes with no, two or foreign ``Origin`` headers, bad
``Upgrade``/``Connection``/key/version, other methods and HTTP versions. The property
(docs/secure-element.md, "Bridge protocol"):

* a frame gets ``{"id": <int>, "responses": [hex…]}`` (one per APDU),
  ``{"id": null, "error": "bad request: …"}``, or the connection is closed with 1007
  (text that is not UTF-8) or 1009 (over 64 KiB) — nothing else, never 1011;
* a handshake gets 101 only with exactly one allowed ``Origin``; a parseable one without
  that gets 403; everything else a 4xx, or — only for bytes websockets cannot parse as
  an HTTP/1.1 GET (garbage, bad header names, a body) — a close without an answer;
* no log record at ERROR or above, from any logger, and the bridge still runs a good
  session afterwards.

The nastiest inputs are kept as data in ``tests/vectors/adversarial/bridge-*.json`` and
replayed by ``test_adversarial_vectors``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.se import HATCHWAY_AID, CommandApdu, SoftCard, personalize
from hatchway.se.bridge import MAX_FRAME

from .bridge_runner import RunningBridge, running_bridge
from .conftest import NOW, ORIGIN, Pki

VECTORS = Path(__file__).parent.parent / "vectors" / "adversarial"
SELECT_APPLET = CommandApdu(0, 0xA4, 4, 0, HATCHWAY_AID, le=256).encode().hex()
GOOD = json.dumps({"id": 1, "apdus": [SELECT_APPLET, "80cabf2106a6048302130100"]})
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
IDLE_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def live(pki: Pki) -> Iterator[RunningBridge]:
    state = personalize(pki.ca_cert, pki.ca_key, now=NOW, random=SeededRandom(b"prop-card"))
    card = SoftCard(state, clock=FrozenClock(NOW), random=SeededRandom(b"prop-rng"))
    card.power_on()
    with running_bridge(card, [ORIGIN], idle_timeout=IDLE_TIMEOUT) as run:
        yield run
    assert run.logs.at_least(logging.ERROR) == []


class Session:
    """One page connection, reopened whenever the bridge closed the last one."""

    # The bridge closes a session idle for IDLE_TIMEOUT; in random order another test may
    # run for longer than that between two uses, so a stale session is reopened first.
    STALE_AFTER = IDLE_TIMEOUT / 2

    def __init__(self, run: RunningBridge) -> None:
        self.run = run
        self.ws: ClientConnection | None = None
        self.used = 0.0

    def get(self) -> ClientConnection:
        if self.ws is not None and time.monotonic() - self.used > self.STALE_AFTER:
            self.drop()
        if self.ws is None:
            self.ws = open_page(self.run)
        self.used = time.monotonic()
        return self.ws

    def drop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.ws = None


def open_page(run: RunningBridge, timeout: float = 10.0) -> ClientConnection:
    """Connect as the allowed origin; a 409 just means the last session is ending."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ws = connect(run.url, origin=Origin(ORIGIN), open_timeout=5, max_size=None, legacy=True)
        except InvalidStatus as busy:
            if busy.response.status_code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        return ws


@pytest.fixture(scope="module")
def page(live: RunningBridge) -> Iterator[Session]:
    session = Session(live)
    yield session
    session.drop()


def check_reply(payload: bytes, text: bool, session: Session) -> None:
    """Send one frame; assert the documented outcome."""
    ws = session.get()
    try:
        if text:
            # Raw bytes in a text frame: the client does not validate them, the bridge must.
            ws.send(payload, text=True)
        else:
            ws.send(payload)
        answer = json.loads(ws.recv(timeout=20))
    except ConnectionClosed as closed:
        session.drop()
        assert closed.rcvd is not None, "the bridge dropped the TCP connection"
        code = closed.rcvd.code
        event(f"closed {code}")
        if code == 1009:
            assert len(payload) > MAX_FRAME
        else:
            assert code == 1007 and text, (code, closed.rcvd.reason)
            with pytest.raises(UnicodeDecodeError):
                payload.decode("utf-8")
        return
    assert set(answer) in ({"id", "responses"}, {"id", "error"}), answer
    event("error reply" if "error" in answer else "responses")
    if "error" in answer:
        assert answer["id"] is None and answer["error"].startswith("bad request: ")
        return
    doc = json.loads(payload)
    assert answer["id"] == doc["id"] and type(answer["id"]) is int
    assert len(answer["responses"]) == len(doc["apdus"])
    for response in answer["responses"]:
        assert len(bytes.fromhex(response)) >= 2


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[(p // 8) % len(out)] ^= 1 << (p % 8)
    return bytes(out)


ALLOWED_HEADERS = [
    "00a40400",
    "80cabf21",
    "80ca00e0",
    "802a0000",
    "902a0080",
    "80820111",
    "80880113",
    "84420000",
    "94440000",
    "00c00000",
    "80d80081",
    "00200080",
]

# An allowed header with a random body: these pass the allow-list and reach the card.
allowed_apdu_hex = st.tuples(st.sampled_from(ALLOWED_HEADERS), st.binary(max_size=270)).map(
    lambda hb: hb[0] + hb[1].hex()
)
apdu_hex = st.one_of(st.binary(min_size=0, max_size=300).map(bytes.hex), allowed_apdu_hex)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

frames = st.one_of(
    # random binary and text frames
    st.binary(max_size=2048).map(lambda b: (b, False)),
    st.text(max_size=512).map(lambda t: (t.encode(), True)),
    # well-formed requests with random ids and APDUs (some reach the card)
    # (a SELECT of the applet first, often: only then do allowed commands reach the card)
    st.builds(
        lambda i, sel, a, extra: (
            json.dumps({"id": i, "apdus": [SELECT_APPLET] * sel + a, **extra}).encode(),
            True,
        ),
        st.one_of(st.integers(0, 1000), st.integers(-2, 2**54), json_scalar),
        st.integers(0, 1),
        st.lists(apdu_hex, min_size=0, max_size=63),
        st.dictionaries(st.sampled_from(["origin", "type", "x"]), json_value, max_size=2),
    ),
    # truncations and bit flips of a good request
    st.integers(0, len(GOOD)).map(lambda n: (GOOD[:n].encode(), True)),
    st.tuples(st.lists(st.integers(0, 8 * len(GOOD)), min_size=1, max_size=6), st.booleans()).map(
        lambda pt: (flip_bits(GOOD.encode(), pt[0]), pt[1])
    ),
    # lone surrogates: JSON escapes (valid UTF-8) and CESU-8 bytes (not UTF-8)
    st.sampled_from(
        [
            ('{"id": 1, "apdus": ["\\ud800"]}', True),
            ('{"id": "\\udfff", "apdus": []}', True),
            ('{"id": 1, "apdus": ["00a40400"], "\\ud800": 1}', True),
        ]
    ).map(lambda t: (t[0].encode(), t[1])),
    st.sampled_from(
        [
            b'{"id": 1, "apdus": ["\xed\xa0\x80"]}',
            b"\xed\xa0\x80",
            b'{"id": 1, "apdus": ["00a40400"]}\xed\xbf\xbf',
        ]
    ).map(lambda b: (b, True)),
    # NaN, infinities, huge numbers
    st.sampled_from(
        [
            '{"id": NaN, "apdus": ["00c00000"]}',
            '{"id": Infinity, "apdus": []}',
            '{"id": 1, "apdus": [-Infinity]}',
            '{"id": 1e999, "apdus": ["00c00000"]}',
            '{"id": ' + "9" * 5000 + ', "apdus": ["00c00000"]}',
        ]
    ).map(lambda t: (t.encode(), True)),
    # deep nesting, balanced or not, in every position
    st.tuples(st.integers(100, 30_000), st.sampled_from(["[", '{"a":']), st.booleans()).map(
        lambda t: ((t[1] * t[0] + ("]" * t[0] if t[2] and t[1] == "[" else "")).encode(), True)
    ),
    st.integers(100, 20_000).map(
        lambda n: (('{"id": 1, "apdus": ' + "[" * n + "]" * n + "}").encode(), True)
    ),
    # oversized frames
    st.tuples(st.integers(1, 4096), st.booleans()).map(
        lambda t: (b"[" + b"0," * ((MAX_FRAME + t[0]) // 2) + b"0]", t[1])
    ),
)


@settings(
    max_examples=250,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame=frames)
def test_hostile_frames_get_a_documented_refusal(
    live: RunningBridge, page: Session, frame: tuple[bytes, bool]
) -> None:
    payload, text = frame
    check_reply(payload, text, page)
    assert live.logs.at_least(logging.ERROR) == []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(apdus=st.lists(allowed_apdu_hex, min_size=1, max_size=16))
def test_random_apdus_after_the_select_reach_the_card_or_are_refused(
    live: RunningBridge, page: Session, apdus: list[str]
) -> None:
    """Random bodies behind allowed headers do reach the emulated card (PSO with junk
    certificates, AUTHENTICATE with junk keys, bad SM): still one answer per APDU."""
    payload = json.dumps({"id": 5, "apdus": [SELECT_APPLET, *apdus]}).encode()
    check_reply(payload, True, page)
    assert live.logs.at_least(logging.ERROR) == []


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, return the status line (empty if closed without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


ORIGINS = st.lists(
    st.sampled_from(
        [
            ORIGIN,
            "https://evil.example",
            "null",
            "HTTPS://LOCALHOST:8443",
            ORIGIN + "/path",
            "https://localhost:8443.evil.example",
            "",
            "x" * 600,
            "https://\xe9.example",
        ]
    ),
    max_size=3,
)
BREAKS_PARSE = ["Bad Name: y", "Content-Length: 5", "Transfer-Encoding: chunked", ":x"]
EXTRAS = st.lists(
    st.sampled_from(["X-A: b", "Host: other", "X-B: \xff", *BREAKS_PARSE]), max_size=2
)


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "OPTIONS"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]))
    origins = draw(ORIGINS)
    upgrade = draw(st.sampled_from(["websocket", "websocket", "WebSocket", "h2c", "", None]))
    connection = draw(st.sampled_from(["Upgrade", "Upgrade", "keep-alive", None]))
    key = draw(st.sampled_from([KEY, KEY, "abc", None]))
    ws_version = draw(st.sampled_from(["13", "13", "8", None]))
    extras = draw(EXTRAS)
    lines = [f"{method} / {version}", "Host: 127.0.0.1"]
    lines += [f"Origin: {o}" for o in origins]
    for name, value in (
        ("Upgrade", upgrade),
        ("Connection", connection),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", ws_version),
    ):
        if value is not None:
            lines.append(f"{name}: {value}")
    lines += extras
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    facts = {
        "parseable": version in ("HTTP/1.1", "HTTP/1.0") and not set(extras) & set(BREAKS_PARSE),
        "origin_ok": len(origins) == 1 and origins[0] in (ORIGIN, "HTTPS://LOCALHOST:8443"),
    }
    return request, facts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=handshakes())
def test_hostile_handshakes_get_a_4xx(
    live: RunningBridge, page: Session, case: tuple[bytes, dict[str, Any]]
) -> None:
    page.drop()  # one session at a time: free the card for handshakes that may pass
    request, facts = case
    status = raw_exchange(live.port, request)
    if not status:
        assert not facts["parseable"], request
    else:
        code = int(status.split(b" ")[1])
        if code == 101:
            assert facts["origin_ok"], request
        elif facts["parseable"] and not facts["origin_ok"]:
            assert code == 403, (status, request)
        else:
            assert 400 <= code < 500, (status, request)
    assert live.logs.at_least(logging.ERROR) == []


def test_the_bridge_still_serves_after_the_attacks(live: RunningBridge) -> None:
    ws = open_page(live)
    try:
        ws.send(GOOD)
        answer = json.loads(ws.recv(timeout=10))
    finally:
        ws.close()
    assert answer["id"] == 1 and answer["responses"][0].endswith("9000")
    assert answer["responses"][1].endswith("9000")  # the card certificate store
    assert live.logs.at_least(logging.ERROR) == []


def load_vectors() -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text(encoding="utf-8")) | {"file": p.name}
        for p in sorted(VECTORS.glob("bridge-*.json"))
    ]


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["file"])
def test_adversarial_vectors(live: RunningBridge, page: Session, vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["input_hex"])
    expected = vector["expected"]
    if vector["kind"] == "handshake":
        page.drop()
        status = raw_exchange(live.port, payload)
        assert status.startswith(f"HTTP/1.1 {expected['status']} ".encode()), status
    else:
        ws = page.get()
        ws.send(payload, text=vector["kind"] == "text-frame")
        try:
            answer: dict[str, Any] = json.loads(ws.recv(timeout=20))
        except ConnectionClosed as closed:
            page.drop()
            assert closed.rcvd is not None and closed.rcvd.code == expected["close_code"]
        else:
            for key, value in expected["reply"].items():
                assert answer[key] == value, (key, answer)
    assert live.logs.at_least(logging.ERROR) == []
