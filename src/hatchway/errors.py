"""Error hierarchy shared by every flow.

Errors say who was at fault (STYLE.md §4): ``LocalProtocolError`` means this side
was asked to do something the protocol forbids; ``RemoteProtocolError`` means the
peer sent something invalid. Cryptographic verification failures are always the
single opaque ``InvalidMessage`` so that a caller cannot learn which check failed.
"""

from __future__ import annotations


class HatchwayError(Exception):
    """Base class for every error hatchway raises on purpose."""

    #: HTTP status an adapter should map this error to.
    status_hint: int = 400


class LocalProtocolError(HatchwayError):
    """This side tried to do something the protocol does not allow."""

    status_hint = 500


class RemoteProtocolError(HatchwayError):
    """The peer sent something the protocol does not allow."""

    status_hint = 400


class InvalidMessage(RemoteProtocolError):
    """A sealed message, token or proof failed verification.

    Deliberately carries no detail: every failed check (size, parse, algorithm,
    signature, decryption, claims, replay) raises this same exception with the same
    message, so the error gives an attacker no oracle. Servers log the real reason
    separately via ``reason`` which must never be sent to the peer.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__("invalid message")
        self.reason = reason


class ConfigurationError(HatchwayError):
    """hatchway was started or called with settings that cannot work."""

    status_hint = 500
