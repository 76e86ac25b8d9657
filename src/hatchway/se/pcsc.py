"""A real card (or a vpcd-emulated one) through PC/SC, host side, via pyscard.

PC/SC (pcsc-lite on Linux, WinSCard elsewhere) hands whole APDUs to the reader
driver, so this transport is the same ``transmit(apdu) -> rapdu`` callable as the
in-process one (STYLE.md §9) plus ``reset``, which the bridge uses to start every
web session on a fresh card session (the card forgets any earlier origin).

``smartcard`` (the optional ``pcsc`` extra) is imported lazily so that hatchway
installs and runs without pyscard or libpcsclite.
"""

from __future__ import annotations

from typing import Any

from hatchway.errors import ConfigurationError, RemoteProtocolError


def _smartcard() -> Any:
    try:
        import smartcard.Exceptions
        import smartcard.scard
        import smartcard.System
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "PC/SC needs pyscard: pip install 'hatchway[pcsc]' (and pcscd running)"
        ) from exc
    return smartcard


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows (empty when none or no pcscd)."""
    sc = _smartcard()
    try:
        return [str(r) for r in sc.System.readers()]
    except sc.Exceptions.ListReadersException:
        return []


class PcscError(RemoteProtocolError):
    """The reader or card failed at the PC/SC level (removed, reset, unresponsive)."""


class PcscTransport:
    """One connection to the card in a PC/SC reader chosen by name or index.

    ``reader`` may be a 0-based index, an exact reader name, or a substring of one
    (``"Virtual PCD"``); ``None`` takes the first reader with a card.
    """

    def __init__(self, reader: str | int | None = None) -> None:
        self._sc = _smartcard()
        self.reader_name = self._pick(reader)
        self._connection: Any = None
        self.atr = self.reset()

    def _pick(self, wanted: str | int | None) -> str:
        names = list_readers()
        if not names:
            raise ConfigurationError("no PC/SC reader found (is pcscd running?)")
        if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
            index = int(wanted)
            if not 0 <= index < len(names):
                raise ConfigurationError(f"no PC/SC reader #{index}; readers: {names}")
            return names[index]
        if wanted is None:
            return names[0]
        matches = [n for n in names if n == wanted] or [n for n in names if wanted in n]
        if len(matches) != 1:
            raise ConfigurationError(f"reader {wanted!r} matches {matches}; readers: {names}")
        return matches[0]

    def reset(self) -> bytes:
        """Warm-reset the card (connecting first if needed); returns the ATR."""
        errors = self._sc.Exceptions.CardConnectionException
        try:
            if self._connection is None:
                reader = next(r for r in self._sc.System.readers() if str(r) == self.reader_name)
                connection = reader.createConnection()
                connection.connect()
                self._connection = connection
            # SCardReconnect with SCARD_RESET_CARD: the card loses every volatile
            # session (origin, channel) even when another process powered it.
            self._connection.reconnect(disposition=self._sc.scard.SCARD_RESET_CARD)
        except (errors, StopIteration) as exc:
            self._connection = None
            raise PcscError(f"cannot reset the card in {self.reader_name}: {exc}") from None
        return bytes(self._connection.getATR())

    def transmit(self, apdu: bytes) -> bytes:
        if self._connection is None:
            raise PcscError("not connected")
        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
        except self._sc.Exceptions.CardConnectionException as exc:
            raise PcscError(f"PC/SC transmit failed: {exc}") from None
        return bytes(data) + bytes((sw1, sw2))

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.disconnect()
            finally:
                self._connection = None
