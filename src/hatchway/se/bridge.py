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
* relays the page's APDUs and answers locally ``6986`` to any SET ORIGIN the page
  sends (the card would refuse it anyway; the bridge never lets it through).

Wire format (text frames, JSON, hex — easy to read in devtools and to log)::

    bridge → page  {"type": "ready", "origin": "https://…", "atr": "3b…"}
    page → bridge  {"id": 7, "apdus": ["00a40400…", …]}     # other keys are ignored
    bridge → page  {"id": 7, "responses": ["…9000", …]}      # one per APDU, in order
                   {"id": 7, "error": "…"}                    # malformed request / card gone

The bridge completes ``61xx`` with GET RESPONSE itself (ISO 7816-4 §5.3.4), as a
PC/SC host stack would, so each relayed response is whole.

Robustness: an allow-listed origin longer than SET ORIGIN can carry (255 bytes, a
short APDU) is refused at startup; a page message that does not parse (malformed,
too deep, too big) gets an ``error`` reply, never a crash; a session with no message
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
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hatchway import strictjson
from hatchway.errors import ConfigurationError, HatchwayError

from .apdu import get_response
from .appcert import serialize_origin
from .constants import CLA, INS, SW, SW1_BYTES_REMAINING

log = logging.getLogger("hatchway.se.bridge")

DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
MAX_FRAME = 64 * 1024
MAX_BATCH = 64
MAX_GET_RESPONSE = 64
#: SET ORIGIN is a short APDU: its data, the ASCII origin, fits in one Lc byte.
MAX_SET_ORIGIN = 255
IDLE_TIMEOUT = 60.0


class CardTransport(Protocol):
    """What the bridge needs from a card: ``SoftCard``, ``PcscTransport``."""

    def transmit(self, apdu: bytes) -> bytes: ...

    def reset(self) -> bytes: ...


def is_set_origin(apdu: bytes) -> bool:
    """Any proprietary-class APDU with INS 1E, whatever its chaining/SM/channel bits:
    a chained link reassembles into a plain SET ORIGIN on the card."""
    return len(apdu) >= 2 and bool(apdu[0] & CLA.PROPRIETARY) and apdu[1] == INS.SET_ORIGIN


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
    messages: int = 0
    origins: list[str] = field(default_factory=list)


class RelayError(HatchwayError):
    """The page sent a request the bridge will not relay."""


def parse_request(text: str | bytes) -> tuple[Any, list[bytes]]:
    """``{"id", "apdus": [hex…]}`` → (id, APDUs). Every other key is ignored on purpose:
    an ``origin`` field in a message has no effect on anything."""
    try:
        doc = strictjson.loads(text)  # one reader for all peer JSON
        if not isinstance(doc, dict):
            raise ValueError("not an object")
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
    request_id = doc.get("id")
    return (request_id if isinstance(request_id, int | str) else None), apdus


class Bridge:
    """Relays one page at a time to ``card``; origins outside ``allowed`` are refused."""

    def __init__(self, card: CardTransport, allowed_origins: Iterable[str], *,
                 port: int = DEFAULT_PORT, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.card = card
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
            log.warning("refused origin %r", request.headers.get("Origin"))
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
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
            self.stats.origins.append(origin)
            atr = await asyncio.to_thread(self._open_card_session, origin)
            await ws.send(json.dumps({"type": "ready", "origin": origin, "atr": atr.hex()}))
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), self.idle_timeout)
                except TimeoutError:
                    log.info("closing an idle session", extra={"origin": origin})
                    await ws.close(1000, "idle timeout")
                    break
                await ws.send(await asyncio.to_thread(self.answer, message))
        except ConnectionClosed:
            pass
        except HatchwayError as exc:
            log.warning("card session failed: %s", exc)
            await ws.close(1011, "card unavailable")
        finally:
            # The next session starts with a card reset, which drops any open channel.
            self._busy = False

    def _open_card_session(self, origin: str) -> bytes:
        atr = self.card.reset()
        answer = self.card.transmit(set_origin_apdu(origin))
        if answer[-2:] != SW.OK.to_bytes(2, "big"):
            raise RelayError(f"the card refused SET ORIGIN ({answer[-2:].hex()})")
        return atr

    def answer(self, message: str | bytes) -> str:
        """One page message → the reply text (blocking: runs in a worker thread)."""
        self.stats.messages += 1
        try:
            request_id, apdus = parse_request(message)
        except RelayError as exc:
            return json.dumps({"id": None, "error": str(exc)})
        responses = []
        try:
            for apdu in apdus:
                if is_set_origin(apdu):
                    self.stats.dropped_set_origin += 1
                    log.warning("dropped a SET ORIGIN sent by the page")
                    responses.append(SW.COMMAND_NOT_ALLOWED.to_bytes(2, "big").hex())
                    continue
                self.stats.apdus += 1
                responses.append(transmit_whole(self.card, apdu).hex())
        except HatchwayError as exc:
            return json.dumps({"id": request_id, "error": f"card I/O failed: {exc}"})
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
