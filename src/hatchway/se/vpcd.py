"""The emulator as a card in a PC/SC reader: the vicc side of vsmartcard's vpcd.

vpcd is a pcsc-lite reader driver (Debian ``vsmartcard-vpcd``) that listens on a
TCP port (35963 by default, ``CHANNELID`` in ``/etc/reader.conf.d/vpcd``) and
forwards whatever pcscd asks of its "card" to whoever connects. The wire format is
the one vsmartcard's ``vicc`` speaks (virtualsmartcard/VirtualSmartcard.py):

* every message, both ways, is a 2-byte big-endian length and that many bytes;
* a 1-byte message from vpcd is a control code (``VpcdControl``): power off, power
  on, reset, or "send the ATR" — only the last is answered (with the ATR);
* any longer message is a command APDU, answered with the response APDU.

The card is driven through ``SoftCard.transmit`` exactly as an in-process host
would, so pcscd and pyscard see the same APDUs. A dropped connection (pcscd
restarted) is retried with capped exponential back-off; ``stop()`` — wired to
SIGTERM by the CLI — ends the loop cleanly between two messages.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from enum import IntEnum, unique

from hatchway.errors import LocalProtocolError

from .constants import SW
from .emulator import SoftCard

log = logging.getLogger("hatchway.se.vpcd")

#: vpcd's default port (``VPCD_DEFAULT_PORT`` in vsmartcard's vpcd.h).
DEFAULT_PORT = 35963
#: Largest message the 2-byte length can announce.
MAX_MESSAGE = 0xFFFF
#: How often a blocked read wakes to look at the stop flag.
_POLL_SECONDS = 0.2


@unique
class VpcdControl(IntEnum):
    """1-byte control messages from vpcd (``VPCD_CTRL_*`` in vpcd.h)."""

    OFF = 0
    ON = 1
    RESET = 2
    ATR = 4


class VpcdClosed(Exception):
    """The driver closed the connection; the caller reconnects."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``HOST`` (default port); IPv6 literals in brackets."""
    default = str(DEFAULT_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else default
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" not in text:
        host, port = text, default
    else:
        raise ValueError(f"bad vpcd address {text!r}: put IPv6 literals in brackets")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad vpcd address {text!r}: expected HOST:PORT")
    return host, int(port)


class VpcdCard:
    """Serves one ``SoftCard`` to a vpcd driver until ``stop()`` is called."""

    def __init__(
        self,
        card: SoftCard,
        address: tuple[str, int],
        *,
        max_backoff: float = 5.0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.card = card
        self.address = address
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._on_event = on_event or (lambda _event: None)
        self.apdus = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def serve_forever(self) -> None:
        """Connect, serve, and reconnect with back-off until stopped."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                sock = socket.create_connection(self.address, timeout=2.0)
            except OSError as exc:
                log.debug("vpcd not reachable at %s:%d: %s", *self.address, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            self._on_event("connected")
            try:
                with sock:
                    sock.settimeout(_POLL_SECONDS)
                    self._serve(sock)
            except (VpcdClosed, OSError) as exc:
                log.info("vpcd connection ended: %s", exc)
            # The reader lost its card: a reconnect is a fresh insertion.
            self.card.power_off()
            self._on_event("disconnected")

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            message = self._receive(sock)
            if message is None:
                continue
            answer = self.handle(message)
            if answer is not None:
                sock.sendall(len(answer).to_bytes(2, "big") + answer)

    def handle(self, message: bytes) -> bytes | None:
        """One vpcd message → the bytes to send back, or ``None`` for no answer."""
        if len(message) == 1:
            return self._control(message[0])
        self.apdus += 1
        try:
            return self.card.transmit(message)
        except LocalProtocolError:
            # pcscd sent an APDU to an unpowered card; a real reader would report
            # "no card", the closest an APDU-level answer gets is "no diagnosis".
            return SW.NO_PRECISE_DIAGNOSIS.to_bytes(2, "big")

    def _control(self, code: int) -> bytes | None:
        try:
            control = VpcdControl(code)
        except ValueError:
            log.warning("unknown vpcd control code %d", code)
            return None
        if control is VpcdControl.OFF:
            self.card.power_off()
        elif control is VpcdControl.ON:
            self.card.power_on()
        elif control is VpcdControl.RESET:
            self.card.reset()
        else:
            return self.card.atr
        return None

    def _receive(self, sock: socket.socket) -> bytes | None:
        """One framed message, or ``None`` when the poll interval passed idle."""
        try:
            first = sock.recv(1)
        except TimeoutError:
            return None
        if not first:
            raise VpcdClosed("driver closed the connection")
        header = first + self._exactly(sock, 1)
        return self._exactly(sock, int.from_bytes(header, "big"))

    def _exactly(self, sock: socket.socket, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = sock.recv(n - len(out))
            except TimeoutError:
                if self._stop.is_set():
                    raise VpcdClosed("stopping mid-message") from None
                continue
            if not chunk:
                raise VpcdClosed("driver closed the connection mid-message")
            out += chunk
        return out
