"""SCRAM-SHA-256 between the phone page and the server (RFC 5802, RFC 7677).

This is claim step 5 of US 9,635,022 B2: the phone sends the session identifier
with authenticating data derived from the password, never the password itself.
The server side runs on ``scramp``; the phone runs ``static/scram.js`` (WebCrypto)
or, in the SDK and tests, :class:`ScramClient`. Both send byte-identical messages.

Binding the login session into the proof
----------------------------------------
The SCRAM username ``n=`` carries the session reference
(:func:`hatchway.login.codes.session_reference`, ``hwl1.`` + 144 bits derived
from the device code hash), not the account name: the user never types the
username on the phone (claim step 4), and the verifier does not depend on it
(SaltedPassword = Hi(password, salt, i) only), so nothing is lost. The server
opens one :class:`ScramServerExchange` per session, with that session's reference
and the verifier of the session's account, and refuses any ``n=`` other than the
reference.

This is sound because ``n=`` sits in client-first-bare, the first part of
AuthMessage = client-first-bare "," server-first "," client-final-without-proof,
and ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage) (RFC 5802 §3). The
server rebuilds AuthMessage from what it received and from its own server-first,
so a proof made for session A cannot be used for session B: left as ``n=A`` it
is refused at once; rewritten to ``n=B`` the AuthMessage changes and the proof
fails; and every exchange has a fresh server nonce, so even a proof for the same
session cannot be replayed into a new exchange.

Channel binding is not used (GS2 header ``n,,`` only): scramp knows only the TLS
binding types, and in the scaled deployment TLS ends at a proxy, so the server
process cannot see the real channel. The binding that matters here, to the login
session, is in the AuthMessage already.

The server stores only :class:`ScramVerifier` (salt, iterations, StoredKey,
ServerKey). Every failed check raises the one opaque ``InvalidMessage``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scramp import ScramClient as _ScrampClient
from scramp import ScramException, ScramMechanism
from scramp.utils import saslprep

from hatchway.errors import HatchwayError, InvalidMessage, LocalProtocolError
from hatchway.runtime import Random

__all__ = [
    "DEFAULT_ITERATIONS",
    "MECHANISM",
    "ExchangeState",
    "ScramClient",
    "ScramServerExchange",
    "ScramVerifier",
    "UnusablePassword",
    "decoy_iterations",
    "decoy_verifier",
    "make_verifier",
]

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 600_000
"""PBKDF2-HMAC-SHA256 rounds for new verifiers (OWASP's 2023 figure)."""
MIN_ITERATIONS = 4096  # RFC 7677 §4's floor, and scramp's.
MAX_ITERATIONS = 10_000_000  # scramp's cap; keeps a hostile server from stalling phones.
SALT_BYTES = 16
_KEY_BYTES = hashlib.sha256().digest_size
_NONCE_BYTES = 24
# Our messages are well under 300 characters; the cap bounds parsing work.
MAX_MESSAGE_LENGTH = 4096
_MAX_JSON_LENGTH = 1024
# Anything scramp or base64 may raise on hostile input; all become InvalidMessage.
_PARSE_ERRORS = (ScramException, ValueError, TypeError, KeyError, UnicodeError)


class UnusablePassword(HatchwayError, ValueError):
    """The password is empty after SASLprep or contains prohibited characters."""

    status_hint = 400


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _prepare(password: str) -> str:
    # The message never echoes the password: it may end up in a log.
    try:
        prepared = str(saslprep(password))
    except ScramException as e:
        raise UnusablePassword("password contains characters SASLprep prohibits") from e
    if not prepared:
        raise UnusablePassword("password is empty")
    return prepared


def _nonce(random: Random) -> str:
    return base64.urlsafe_b64encode(random(_NONCE_BYTES)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """What the server keeps for an account instead of its password."""

    salt: bytes = field(repr=False)
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.salt) < 12:  # scramp refuses shorter salts
            raise ValueError("salt too short")
        if not MIN_ITERATIONS <= self.iterations <= MAX_ITERATIONS:
            raise ValueError("iteration count out of range")
        if len(self.stored_key) != _KEY_BYTES or len(self.server_key) != _KEY_BYTES:
            raise ValueError("keys must be SHA-256 sized")

    def to_json(self) -> str:
        return json.dumps(
            {
                "mechanism": MECHANISM,
                "salt": _b64(self.salt),
                "iterations": self.iterations,
                "stored_key": _b64(self.stored_key),
                "server_key": _b64(self.server_key),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ScramVerifier:
        """Parse :meth:`to_json` output; anything else raises ``ValueError``."""
        if len(text) > _MAX_JSON_LENGTH:
            raise ValueError("verifier JSON too long")
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.get("mechanism") != MECHANISM:
            raise ValueError("not a SCRAM-SHA-256 verifier")
        iterations = data.get("iterations")
        if type(iterations) is not int:
            raise ValueError("iterations must be an integer")
        try:
            return cls(
                salt=_unb64(data["salt"]),
                iterations=iterations,
                stored_key=_unb64(data["stored_key"]),
                server_key=_unb64(data["server_key"]),
            )
        except (KeyError, TypeError, AttributeError, binascii.Error) as e:
            raise ValueError("malformed verifier") from e


def make_verifier(
    password: str, *, random: Random, iterations: int = DEFAULT_ITERATIONS
) -> ScramVerifier:
    """Derive the verifier for ``password`` with a fresh salt from ``random``."""
    _prepare(password)
    try:
        salt, stored_key, server_key, i = ScramMechanism(MECHANISM).make_auth_info(
            password, iteration_count=iterations, salt=random(SALT_BYTES)
        )
    except ScramException as e:
        raise ValueError("iteration count out of range") from e
    return ScramVerifier(salt=salt, iterations=int(i), stored_key=stored_key, server_key=server_key)


def decoy_verifier(
    account_name: str, *, secret: bytes, iterations: int = DEFAULT_ITERATIONS
) -> ScramVerifier:
    """A stable fake verifier for an account that does not exist.

    Used so that an unknown username gets the same kind of server-first (same
    iteration count, a salt that does not change between attempts) and the same
    failure as a wrong password. Derived from a server secret, so the salt cannot
    be predicted and told apart from a real one; no password matches the keys.
    """

    def derive(label: bytes) -> bytes:
        msg = b"hatchway scram decoy\x00" + label + b"\x00" + account_name.encode()
        return hmac.new(secret, msg, hashlib.sha256).digest()

    return ScramVerifier(
        salt=derive(b"salt")[:SALT_BYTES],
        iterations=iterations,
        stored_key=derive(b"stored key"),
        server_key=derive(b"server key"),
    )


def decoy_iterations(account_name: str, *, secret: bytes, counts: Mapping[int, int]) -> int:
    """The PBKDF2 count a decoy for ``account_name`` shows: drawn from the real ones.

    ``counts`` maps each count real accounts use to how many use it. With one
    count (what ``hatchway users add`` enforces) every decoy shows it. When
    accounts are split anyway (data from before that rule), each unknown name
    gets a count picked with the real accounts' weights by a keyed hash of the
    name: stable for that name, like a real account's, and distributed like
    the real ones, so ``i=`` says nothing a guesser did not already know from
    the distribution. Ascending order keeps a name's pick where it was when the
    weights shift a little. Raises ``ValueError`` on empty ``counts``.
    """
    live = sorted((i, n) for i, n in counts.items() if n > 0)
    if not live:
        raise ValueError("no iteration counts to match")
    if len(live) == 1:
        return live[0][0]
    msg = b"hatchway scram decoy\x00iterations\x00" + account_name.encode()
    point = int.from_bytes(hmac.new(secret, msg, hashlib.sha256).digest()[:8], "big")
    target = point * sum(n for _, n in live) >> 64  # uniform in [0, total)
    for iterations, n in live:
        if target < n:
            return iterations
        target -= n
    return live[-1][0]  # pragma: no cover - target < total by construction


class ExchangeState(StrEnum):
    AWAITING_CLIENT_FIRST = "awaiting_client_first"
    AWAITING_CLIENT_FINAL = "awaiting_client_final"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ScramServerExchange:
    """The server side of one SCRAM-SHA-256 exchange for one login session.

    Sans-I/O: ``start`` takes client-first and returns server-first, ``finish``
    takes client-final and returns server-final. Any failure raises
    ``InvalidMessage`` and closes the exchange for good; calling a step out of
    order raises ``LocalProtocolError``.
    """

    def __init__(
        self,
        session_ref: str,
        verifier: ScramVerifier,
        *,
        random: Random,
        server_nonce: str | None = None,
    ) -> None:
        """``server_nonce`` exists for known-answer tests; leave it ``None``."""
        self.session_ref = session_ref
        self.state = ExchangeState.AWAITING_CLIENT_FIRST
        self._verifier = verifier
        nonce = _nonce(random) if server_nonce is None else server_nonce
        self._server = ScramMechanism(MECHANISM).make_server(self._auth_fn, s_nonce=nonce)

    def _auth_fn(self, username: str) -> tuple[bytes, bytes, bytes, int] | None:
        if not hmac.compare_digest(username.encode(), self.session_ref.encode()):
            return None  # scramp turns this into an error: wrong session
        v = self._verifier
        return v.salt, v.stored_key, v.server_key, v.iterations

    def _fail(self, reason: str) -> InvalidMessage:
        # ``reason`` is for the server log only; the peer sees "invalid message".
        self.state = ExchangeState.FAILED
        return InvalidMessage(reason)

    def _expect(self, state: ExchangeState) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"SCRAM exchange is {self.state}, expected {state}")

    def start(self, client_first: str) -> str:
        """Take client-first, return server-first."""
        self._expect(ExchangeState.AWAITING_CLIENT_FIRST)
        if len(client_first) > MAX_MESSAGE_LENGTH:
            raise self._fail("client-first too long")
        if not client_first.startswith("n,,"):
            # Only the no-channel-binding GS2 header is allowed (see module doc).
            raise self._fail("unsupported GS2 header")
        try:
            self._server.set_client_first(client_first)
            server_first = str(self._server.get_server_first())
        except _PARSE_ERRORS as e:
            raise self._fail(f"client-first rejected: {e}") from None
        self.state = ExchangeState.AWAITING_CLIENT_FINAL
        return server_first

    def finish(self, client_final: str) -> str:
        """Take client-final, verify the proof, return server-final."""
        self._expect(ExchangeState.AWAITING_CLIENT_FINAL)
        if len(client_final) > MAX_MESSAGE_LENGTH:
            raise self._fail("client-final too long")
        try:
            self._server.set_client_final(client_final)
            server_final = str(self._server.get_server_final())
        except _PARSE_ERRORS as e:
            raise self._fail(f"client-final rejected: {e}") from None
        self.state = ExchangeState.SUCCEEDED
        return server_final


class ScramClient:
    """The phone side in Python: the SDK's phone-side client and the tests' oracle.

    ``first()`` → client-first; ``final(server_first)`` → client-final;
    ``verify(server_final)`` checks the server knew the verifier. Failures raise
    ``InvalidMessage``; an unusable password raises ``UnusablePassword`` at once.
    """

    def __init__(
        self,
        session_ref: str,
        password: str,
        *,
        random: Random,
        client_nonce: str | None = None,
    ) -> None:
        """``client_nonce`` exists for known-answer tests; leave it ``None``."""
        _prepare(password)
        nonce = _nonce(random) if client_nonce is None else client_nonce
        try:
            self._client = _ScrampClient([MECHANISM], session_ref, password, c_nonce=nonce)
        except ScramException as e:
            raise ValueError("unusable session reference or nonce") from e

    def first(self) -> str:
        return str(self._client.get_client_first())

    def final(self, server_first: str) -> str:
        if len(server_first) > MAX_MESSAGE_LENGTH:
            raise InvalidMessage("server-first too long")
        try:
            self._client.set_server_first(server_first)
            return str(self._client.get_client_final())
        except _PARSE_ERRORS as e:
            raise InvalidMessage(f"server-first rejected: {e}") from None

    def verify(self, server_final: str) -> None:
        if len(server_final) > MAX_MESSAGE_LENGTH:
            raise InvalidMessage("server-final too long")
        try:
            self._client.set_server_final(server_final)
        except _PARSE_ERRORS as e:
            raise InvalidMessage(f"server-final rejected: {e}") from None
