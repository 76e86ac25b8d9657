"""SCP03 secure messaging, for the host (OCE) and for the card.

Implements GP Card Spec v2.3 Amendment D (SCP03) v1.2 §6.2.4-6.2.7, which SCP11
reuses unchanged (Amendment F §6.6), at the one security level hatchway offers:
C-MAC + C-DECRYPTION + R-MAC + R-ENCRYPTION.

* Command: data padded per ISO/IEC 9797-1 method 2 and AES-CBC encrypted under
  S-ENC with ICV = AES(S-ENC, 00 || counter₁₅); then the C-MAC is the first 8 bytes
  of AES-CMAC(S-MAC, chain || CLA' INS P1 P2 Lc' || data'), where CLA' has the
  secure-messaging bit and Lc' counts the MAC; the full 16-byte CMAC becomes the
  next chaining value.
* Response: data encrypted with ICV = AES(S-ENC, 80 || counter₁₅) (same counter as
  the command), then R-MAC = AES-CMAC(S-RMAC, chain || data' || SW)[:8]. Error
  status words (not 9000/62xx/63xx) travel bare, without R-MAC (§6.2.5).
* The counter starts at 1 and advances with every command, with or without data.

The host may wrap several commands before the first answer comes back (a relay
that carries them as one batch): the C-MAC chain and the counter advance only on
commands, so ``SecureChannel`` remembers the chaining value and counter of each
command in flight and checks the responses in order against their own command's.

Any failed MAC or padding check closes the channel for good: the object forgets its
keys and every later call raises ``ChannelClosed`` (STYLE.md §4). The failure itself
is the single opaque ``InvalidMessage`` (STYLE.md §5).
"""

from __future__ import annotations

import hmac
from collections import deque
from dataclasses import replace
from enum import Enum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hatchway.errors import InvalidMessage, LocalProtocolError

from .apdu import SHORT_MAX_DATA, SHORT_MAX_NE, CommandApdu, ResponseApdu
from .constants import CLA, is_success
from .errors import ChannelClosed
from .kdf import SessionKeys, aes_cmac

MAC_LENGTH = 8
BLOCK = 16


def pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: ``80`` then zeros to a block boundary."""
    padded = data + b"\x80"
    return padded + b"\x00" * (-len(padded) % BLOCK)


def unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80 or len(data) - len(stripped) >= BLOCK:
        raise ValueError("bad ISO 9797-1 padding")
    return stripped[:-1]


class ChannelState(Enum):
    OPEN = "open"
    #: host: commands were wrapped, responses are due. card: a command is being served.
    BUSY = "busy"
    CLOSED = "closed"


#: How many wrapped commands the host may have in flight at once.
MAX_IN_FLIGHT = 16

# One table of legal moves (STYLE.md §2); anything else is a LocalProtocolError.
# The card only ever uses "command" and "response"; "pipelined-command" (another
# command while responses are due) and "response-more" (a response while more are
# due) are the host's.
_TRANSITIONS: dict[tuple[ChannelState, str], ChannelState] = {
    (ChannelState.OPEN, "command"): ChannelState.BUSY,
    (ChannelState.BUSY, "response"): ChannelState.OPEN,
    (ChannelState.BUSY, "pipelined-command"): ChannelState.BUSY,
    (ChannelState.BUSY, "response-more"): ChannelState.BUSY,
}


class _SecureMessaging:
    def __init__(self, keys: SessionKeys, mac_chain: bytes = bytes(BLOCK), counter: int = 1):
        if len(mac_chain) != BLOCK:
            raise ValueError("MAC chaining value is one AES block")
        self._keys: SessionKeys | None = keys
        self._chain = mac_chain
        self._counter = counter
        self._current = 0
        self.state = ChannelState.OPEN

    @property
    def closed(self) -> bool:
        return self.state is ChannelState.CLOSED

    def close(self) -> None:
        self._keys = None
        self._chain = bytes(BLOCK)
        self.state = ChannelState.CLOSED

    def _move(self, event: str) -> SessionKeys:
        if self._keys is None or self.state is ChannelState.CLOSED:
            raise ChannelClosed()
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(
                f"secure channel: {event} not allowed while {self.state.value}"
            )
        self.state = nxt
        return self._keys

    def _fail(self, reason: str) -> InvalidMessage:
        self.close()
        return InvalidMessage(reason)

    def _cipher(self, keys: SessionKeys, response: bool) -> Cipher[modes.CBC]:
        block = (b"\x80" if response else b"\x00") + self._current.to_bytes(15, "big")
        # AES-CBC over one block with a zero IV is the single-block AES(S-ENC, block)
        # the spec asks for, without reaching for ECB mode.
        icv_enc = Cipher(algorithms.AES(keys.s_enc), modes.CBC(bytes(BLOCK))).encryptor()
        icv = icv_enc.update(block) + icv_enc.finalize()
        return Cipher(algorithms.AES(keys.s_enc), modes.CBC(icv))

    def _encrypt(self, keys: SessionKeys, data: bytes, response: bool) -> bytes:
        enc = self._cipher(keys, response).encryptor()
        return enc.update(pad(data)) + enc.finalize()

    def _decrypt(self, keys: SessionKeys, data: bytes, response: bool) -> bytes:
        if len(data) % BLOCK:
            raise self._fail("ciphertext is not whole blocks")
        dec = self._cipher(keys, response).decryptor()
        try:
            return unpad(dec.update(data) + dec.finalize())
        except ValueError:
            raise self._fail("padding") from None

    def _next_counter(self) -> None:
        self._current = self._counter
        self._counter += 1


def _mac_input(cmd: CommandApdu) -> bytes:
    """Header with the SM bit, Lc as carried, data without the MAC."""
    return cmd.header() + cmd.lc_field() + cmd.data[:-MAC_LENGTH]


class SecureChannel(_SecureMessaging):
    """The host (OCE) end: ``wrap`` commands, then ``unwrap`` their responses in order."""

    def __init__(self, keys: SessionKeys, mac_chain: bytes = bytes(BLOCK), counter: int = 1):
        super().__init__(keys, mac_chain, counter)
        #: (counter, MAC chaining value) of each wrapped command awaiting its response.
        self._in_flight: deque[tuple[int, bytes]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def close(self) -> None:
        super().close()
        self._in_flight.clear()

    def wrap_command(self, cmd: CommandApdu) -> CommandApdu:
        if cmd.cla & (CLA.SECURE_MESSAGING | CLA.CHAINING):
            raise LocalProtocolError("wrap the whole plain command; chain after wrapping")
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            raise LocalProtocolError("too many commands in flight")
        keys = self._move("pipelined-command" if self._in_flight else "command")
        self._next_counter()
        body = self._encrypt(keys, cmd.data, response=False) if cmd.data else b""
        extended = cmd.extended or len(body) + MAC_LENGTH > SHORT_MAX_DATA
        le = None if cmd.le is None else (65536 if extended else SHORT_MAX_NE)
        draft = CommandApdu(
            cmd.cla | CLA.SECURE_MESSAGING,
            cmd.ins,
            cmd.p1,
            cmd.p2,
            body + bytes(MAC_LENGTH),
            le=le,
            extended=extended,
        )
        self._chain = aes_cmac(keys.s_mac, self._chain, _mac_input(draft))
        self._in_flight.append((self._current, self._chain))
        return replace(draft, data=body + self._chain[:MAC_LENGTH])

    def unwrap_response(self, resp: ResponseApdu) -> ResponseApdu:
        keys = self._move("response-more" if len(self._in_flight) > 1 else "response")
        self._current, chain = self._in_flight.popleft()
        if not is_success(resp.sw):
            if resp.data:
                raise self._fail("data on an error status word")
            return resp
        if len(resp.data) < MAC_LENGTH:
            raise self._fail("response without R-MAC")
        body, mac = resp.data[:-MAC_LENGTH], resp.data[-MAC_LENGTH:]
        expected = aes_cmac(keys.s_rmac, chain, body, resp.sw.to_bytes(2, "big"))
        if not hmac.compare_digest(expected[:MAC_LENGTH], mac):
            raise self._fail("R-MAC")
        plain = self._decrypt(keys, body, response=True) if body else b""
        return ResponseApdu(plain, resp.sw)

    def wrap(self, apdu: bytes) -> bytes:
        """Plain command APDU bytes in, protected command APDU bytes out."""
        return self.wrap_command(CommandApdu.parse(apdu)).encode()

    def unwrap(self, rapdu: bytes) -> bytes:
        """Protected response APDU bytes in, plain response APDU bytes out."""
        return self.unwrap_response(ResponseApdu.parse(rapdu)).encode()


class CardSecureChannel(_SecureMessaging):
    """The card end: ``unwrap_command`` checks the C-MAC, ``wrap_response`` protects.

    ``oce_authenticated`` is true for SCP11a/c, where the OCE proved its certified
    key; SCP11b channels are encrypted but anonymous, and the applet uses the flag
    to keep secrets away from them.
    """

    def __init__(
        self,
        keys: SessionKeys,
        mac_chain: bytes,
        *,
        oce_authenticated: bool,
        counter: int = 1,
    ) -> None:
        super().__init__(keys, mac_chain, counter)
        self.oce_authenticated = oce_authenticated

    def unwrap_command(self, cmd: CommandApdu) -> CommandApdu:
        keys = self._move("command")
        if not cmd.cla & CLA.SECURE_MESSAGING or len(cmd.data) < MAC_LENGTH:
            raise self._fail("command without C-MAC")
        expected = aes_cmac(keys.s_mac, self._chain, _mac_input(cmd))
        if not hmac.compare_digest(expected[:MAC_LENGTH], cmd.data[-MAC_LENGTH:]):
            raise self._fail("C-MAC")
        self._chain = expected
        self._next_counter()
        body = cmd.data[:-MAC_LENGTH]
        plain = self._decrypt(keys, body, response=False) if body else b""
        return replace(cmd, cla=cmd.cla & ~int(CLA.SECURE_MESSAGING) & 0xFF, data=plain)

    def wrap_response(self, resp: ResponseApdu) -> ResponseApdu:
        keys = self._move("response")
        if not is_success(resp.sw):
            return ResponseApdu(b"", resp.sw)
        body = self._encrypt(keys, resp.data, response=True) if resp.data else b""
        mac = aes_cmac(keys.s_rmac, self._chain, body, resp.sw.to_bytes(2, "big"))
        return ResponseApdu(body + mac[:MAC_LENGTH], resp.sw)
