"""The bridge: a loopback WebSocket that relays APDUs between a web page and an SE.

US 10,812,467 B2 claim 1, step 3: the SE must learn *which origin the browser
really talks to*. A page can write anything into a message, but it cannot choose
the ``Origin`` header of its WebSocket handshake (Fetch §4.1, RFC 6455 §4.1 item
8: the browser sets it). So the bridge:

* listens on 127.0.0.1 only;
* reads the origin from that header and nowhere else, serialises it (RFC 6454
  §6.2) and refuses, with HTTP 403 at the handshake, any origin not in its
  allow-list;
* serves one session per card at a time (409 while busy), and starts each with a
  card reset followed by SET ORIGIN (CLA 80 INS 1E) carrying that origin — the
  card takes it once per card session, so nothing the page sends can replace it;
* relays only the page APDUs on an explicit allow-list (``se.guard.policy``: SELECT
  of the hatchway applet, the SCP11 handshake, GET DATA ``BF21``/``00E0``, wrapped
  applet commands, GET RESPONSE, plus what the operator adds) and answers every other
  APDU itself without touching the card: ``6986`` to a SET ORIGIN (the card would
  refuse it anyway), ``6700`` to bytes that are not one APDU, ``6985`` to an allowed
  command before an allowed SELECT succeeded in this session, ``6982`` to the rest.

Wire format (text frames, JSON, hex — easy to read in devtools and to log)::

    bridge → page  {"type": "ready", "origin": "https://…", "atr": "3b…"}
    page → bridge  {"id": 7, "apdus": ["00a40400…", …]}     # other keys are ignored
    bridge → page  {"id": 7, "responses": ["…9000", …]}      # one per APDU, in order
                   {"id": 7, "error": "…"}                    # card gone
                   {"id": null, "error": "bad request: …"}    # message refused

``id`` is required: an integer 0..2**53-1 (a JSON number JavaScript holds exactly),
never a boolean, string or float; a message without one is refused whole.

The bridge completes ``61xx`` with GET RESPONSE itself (ISO 7816-4 §5.3.4), as a
PC/SC host stack would, so each relayed response is whole.

Robustness: an allow-listed origin longer than SET ORIGIN can carry (255 bytes, a
short APDU) is refused at startup; a page message that does not parse (malformed,
NaN, too deep, a bad id) gets an ``error`` reply, never a crash; a frame over 64 KiB
or a text frame that is not UTF-8 closes the connection (1009, 1007); a handshake
with no, several or a foreign ``Origin`` gets 403, one over HTTP/1.0 400, and never a
5xx or an ERROR log (tests/se/test_bridge_properties.py); a session with no message
for ``idle_timeout`` seconds (60) is closed, so an idle tab cannot hold the card.
``plaintext_origins`` names allowed ``http://`` origins that are not loopback: a
network attacker can inject script into those pages, and the CLI warns.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hatchway import strictjson
from hatchway.errors import ConfigurationError, HatchwayError

from .apdu import get_response
from .appcert import serialize_origin
from .constants import CLA, INS, SW, SW1_BYTES_REMAINING
from .guard import ApduPolicy, Refusal, SessionGuard, describe

log = logging.getLogger("hatchway.se.bridge")

DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
MAX_FRAME = 64 * 1024
MAX_BATCH = 64
MAX_GET_RESPONSE = 64
#: SET ORIGIN is a short APDU: its data, the ASCII origin, fits in one Lc byte.
MAX_SET_ORIGIN = 255
IDLE_TIMEOUT = 60.0
#: Largest message id: Number.MAX_SAFE_INTEGER, so the page's id round-trips exactly.
MAX_MESSAGE_ID = 2**53 - 1
#: Refused APDUs named in one log line; the count is always logged.
MAX_LOGGED_REFUSALS = 8
#: The handshake's Origin values as logged: a refusal must not log a header whole.
MAX_LOGGED_ORIGIN = 120


class CardTransport(Protocol):
    """What the bridge needs from a card: ``SoftCard``, ``PcscTransport``."""

    def transmit(self, apdu: bytes) -> bytes: ...

    def reset(self) -> bytes: ...


def set_origin_apdu(origin: str) -> bytes:
    data = origin.encode("ascii")
    if not 0 < len(data) <= MAX_SET_ORIGIN:
        raise ValueError(f"SET ORIGIN carries 1..{MAX_SET_ORIGIN} bytes")
    return bytes((CLA.PROPRIETARY, INS.SET_ORIGIN, 0, 0, len(data))) + data


def plaintext_origins(origins: Iterable[str]) -> list[str]:
    """Serialised ``http://`` origins whose host is not loopback."""
    found = []
    for origin in origins:
        parts = urllib.parse.urlsplit(origin)
        host = parts.hostname or ""
        if parts.scheme != "http" or host == "localhost":
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        found.append(origin)
    return found


def transmit_whole(card: CardTransport, apdu: bytes) -> bytes:
    """Send one APDU and collect any ``61xx`` continuation into one response."""
    answer = card.transmit(apdu)
    data, sw = answer[:-2], answer[-2:]
    rounds = 0
    while len(sw) == 2 and sw[0] == SW1_BYTES_REMAINING and rounds < MAX_GET_RESPONSE:
        rounds += 1
        more = card.transmit(get_response(sw[1] or 256).encode())
        data, sw = data + more[:-2], more[-2:]
    return data + sw


@dataclass(slots=True)
class BridgeStats:
    sessions: int = 0
    refused_origins: int = 0
    busy: int = 0
    apdus: int = 0
    dropped_set_origin: int = 0
    refused_apdus: int = 0
    messages: int = 0
    #: Sessions per origin. Only allow-listed origins get a session, so this holds at
    #: most one entry per ``--allow-origin`` however long the bridge runs.
    origins: dict[str, int] = field(default_factory=dict)


class RelayError(HatchwayError):
    """The page sent a request the bridge will not relay."""


def parse_request(text: str | bytes) -> tuple[int, list[bytes]]:
    """``{"id", "apdus": [hex…]}`` → (id, APDUs). Every other key is ignored on purpose:
    an ``origin`` field in a message has no effect on anything."""
    try:
        doc = strictjson.loads(text)  # one reader for all peer JSON (refuses NaN too)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        request_id = doc.get("id")
        # bool is an int subclass: "id": true must not pass as 1.
        if type(request_id) is not int or not 0 <= request_id <= MAX_MESSAGE_ID:
            raise ValueError(f"id must be an integer 0..{MAX_MESSAGE_ID}")
        raw = doc.get("apdus")
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_BATCH:
            raise ValueError(f"apdus must be a list of 1..{MAX_BATCH} hex strings")
        apdus = [bytes.fromhex(a) for a in raw if isinstance(a, str)]
        if len(apdus) != len(raw) or any(len(a) < 4 for a in apdus):
            raise ValueError("every APDU is a hex string of at least 4 bytes")
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, ...
        raise RelayError(f"bad request: {exc}") from None
    except RecursionError:  # nesting deeper than the parser's stack
        raise RelayError("bad request: nested too deeply") from None
    return request_id, apdus


class Bridge:
    """Relays one page at a time to ``card``; origins outside ``allowed`` are refused."""

    def __init__(self, card: CardTransport, allowed_origins: Iterable[str], *,
                 port: int = DEFAULT_PORT, idle_timeout: float = IDLE_TIMEOUT,
                 policy: ApduPolicy | None = None) -> None:
        self.card = card
        self.policy = policy or ApduPolicy()
        #: Replaced at every session start: the card is reset, nothing is selected.
        self._guard = SessionGuard(self.policy)
        allowed = set()
        for origin in allowed_origins:
            try:
                serialised = serialize_origin(origin)
            except ValueError as exc:
                raise ConfigurationError(f"--allow-origin {origin!r}: {exc}") from None
            if len(serialised) > MAX_SET_ORIGIN:
                raise ConfigurationError(
                    f"--allow-origin {origin!r}: {len(serialised)} bytes serialised; "
                    f"SET ORIGIN carries at most {MAX_SET_ORIGIN}")
            allowed.add(serialised)
        if not allowed:
            raise ConfigurationError("the bridge needs at least one allowed origin")
        self.allowed = frozenset(allowed)
        self.port = port
        self.idle_timeout = idle_timeout
        self.stats = BridgeStats()
        self._busy = False

    def origin_of(self, request: Request) -> str | None:
        """The serialised, allowed origin of a handshake, or ``None``."""
        values = request.headers.get_all("Origin")
        if len(values) != 1:
            return None
        try:
            origin = serialize_origin(values[0])
        except ValueError:
            return None
        return origin if origin in self.allowed else None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.origin_of(request) is None:
            self.stats.refused_origins += 1
            # get_all: a handshake may carry no Origin or several (get() raises then).
            values = [v[:MAX_LOGGED_ORIGIN] for v in request.headers.get_all("Origin")[:4]]
            log.warning("refused origin %r", values)
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if request.protocol != "HTTP/1.1":
            # websockets would answer 505; a WebSocket handshake that is not HTTP/1.1 is
            # a malformed request (RFC 6455 §4.2.1), and client faults get a 4xx.
            return connection.respond(HTTPStatus.BAD_REQUEST, "WebSocket needs HTTP/1.1\n")
        if self._busy:
            self.stats.busy += 1
            return connection.respond(HTTPStatus.CONFLICT, "the card is in another session\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        if self._busy:
            # Two handshakes both passed the check above; the second one yields.
            self.stats.busy += 1
            await ws.close(1013, "the card is in another session")
            return
        self._busy = True
        try:
            assert ws.request is not None  # noqa: S101 - the handshake succeeded
            origin = self.origin_of(ws.request)
            assert origin is not None  # noqa: S101 - checked in _process_request
            self.stats.sessions += 1
            self.stats.origins[origin] = self.stats.origins.get(origin, 0) + 1
            atr = await asyncio.to_thread(self._open_card_session, origin)
            await ws.send(json.dumps({"type": "ready", "origin": origin, "atr": atr.hex()}))
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), self.idle_timeout)
                except TimeoutError:
                    log.info("closing an idle session", extra={"origin": origin})
                    await ws.close(1000, "idle timeout")
                    break
                await ws.send(await asyncio.to_thread(self.answer, message, origin))
        except ConnectionClosed:
            pass
        except HatchwayError as exc:
            log.warning("card session failed: %s", exc)
            await ws.close(1011, "card unavailable")
        finally:
            # The next session starts with a card reset, which drops any open channel.
            self._busy = False

    def _open_card_session(self, origin: str) -> bytes:
        self._guard = SessionGuard(self.policy)
        atr = self.card.reset()
        answer = self.card.transmit(set_origin_apdu(origin))
        if answer[-2:] != SW.OK.to_bytes(2, "big"):
            raise RelayError(f"the card refused SET ORIGIN ({answer[-2:].hex()})")
        return atr

    def answer(self, message: str | bytes, origin: str = "") -> str:
        """One page message → the reply text (blocking: runs in a worker thread)."""
        self.stats.messages += 1
        try:
            request_id, apdus = parse_request(message)
        except RelayError as exc:
            return json.dumps({"id": None, "error": str(exc)})
        responses = []
        refused: list[str] = []
        try:
            for apdu in apdus:
                refusal = self._guard.check(apdu)
                if refusal is not None:
                    if refusal is Refusal.SET_ORIGIN:
                        self.stats.dropped_set_origin += 1
                    self.stats.refused_apdus += 1
                    refused.append(f"{describe(apdu)}: {refusal.value}")
                    responses.append(refusal.sw.to_bytes(2, "big").hex())
                    continue
                self.stats.apdus += 1
                answer = transmit_whole(self.card, apdu)
                self._guard.record(apdu, answer)
                responses.append(answer.hex())
        except HatchwayError as exc:
            return json.dumps({"id": request_id, "error": f"card I/O failed: {exc}"})
        finally:
            if refused:
                # One line per message, not per APDU: a page cannot flood the log.
                log.warning("refused %d APDU(s) from the page: %s", len(refused),
                            "; ".join(refused[:MAX_LOGGED_REFUSALS]),
                            extra={"origin": origin})
        return json.dumps({"id": request_id, "responses": responses})

    async def run(self, stop: asyncio.Event,
                  on_ready: Callable[[int], None] | None = None) -> None:
        """Serve until ``stop`` is set; ``on_ready`` gets the bound port."""
        async with serve(
            self._handler, LOOPBACK, self.port,
            process_request=self._process_request,
            max_size=MAX_FRAME, server_header=None, compression=None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.port = int(port)
            log.info("bridge listening", extra={"port": self.port,
                                                 "origins": sorted(self.allowed)})
            if on_ready is not None:
                on_ready(self.port)
            await stop.wait()
