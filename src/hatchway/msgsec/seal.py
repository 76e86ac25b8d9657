"""Seal and open nested message JWTs: a JWS inside a JWE (RFC 7519 §5.2, §7.1).

This is the sans-I/O core of US 11,546,310 claim step 5. ``seal`` signs the
claims (RFC 7515) and encrypts the compact JWS to the recipient (RFC 7516) with
``cty: "JWT"`` (RFC 7519 §5.2). ``open_message`` applies the JWT best current
practice of RFC 8725 §3: size cap before parsing, algorithm allow-lists per layer
and pinned per sender (§3.1), no keys taken from the token (§3.10 via the header
allow-list), explicit ``typ`` (§3.11), ``iss``/``aud`` checks so a message cannot
be forwarded to another audience (§3.8, §3.9), and claim-set validation.

Every failure is the single opaque ``InvalidMessage``; its ``reason`` is for logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hatchway.errors import ConfigurationError, InvalidMessage, LocalProtocolError
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import CodecError, dumps, loads_object
from hatchway.msgsec.algorithms import EncAlg, KeyAlg, Suite
from hatchway.msgsec.keys import DecryptionKey, EncryptionKey, SigningKey, VerifyingKey
from hatchway.msgsec.messages import RULES, Message, MessageType, check_rule
from hatchway.runtime import Random, system_random

__all__ = ["OpenPolicy", "SenderInfo", "open_message", "seal"]

_KEY_ALGS = frozenset(a.value for a in KeyAlg)
_ENC_ALGS = frozenset(e.value for e in EncAlg)


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """What the caller's lookup returns for an inner-JWS ``kid``."""

    id: str
    verifying_key: VerifyingKey
    suite: Suite


@dataclass(frozen=True, slots=True)
class OpenPolicy:
    """What one receiving endpoint accepts."""

    audience: str  # our own id; inner ``aud`` must equal it
    expected: frozenset[MessageType]  # kinds acceptable at this endpoint
    max_size: int = 65536  # checked before any parsing
    max_skew: int = 60  # seconds of allowed clock skew for iat
    max_lifetime: int = 600  # exp - iat must not exceed this

    def __post_init__(self) -> None:
        # An endpoint receives in one direction only; mixing them would let a
        # server accept its own to-device kinds reflected back at it.
        kinds = frozenset(MessageType(k) for k in self.expected)
        if not kinds or len({RULES[k].direction for k in kinds}) != 1:
            raise ConfigurationError("expected kinds must be non-empty and share one direction")
        if not self.audience or min(self.max_size, self.max_lifetime) <= 0 or self.max_skew < 0:
            raise ConfigurationError("audience, max_size and max_lifetime must be set")
        object.__setattr__(self, "expected", kinds)


def seal(
    message: Message,
    *,
    signing_key: SigningKey,
    recipient_key: EncryptionKey,
    suite: Suite,
    random: Random,
    ephemeral_key: _jose.AgreePrivate | None = None,
) -> bytes:
    """Sign ``message`` as a JWS and encrypt it as a compact JWE.

    ``ephemeral_key`` exists only for known-answer tests; normally it is drawn
    from ``random``. Raises ``LocalProtocolError`` if the message or keys do not
    fit the suite or the message kind's rule: that is this side's fault.
    """
    if signing_key.alg is not suite.sign:
        raise LocalProtocolError("signing key algorithm is not the suite's")
    try:
        check_rule(message)  # the shape was checked when the Message was built
    except InvalidMessage as exc:
        raise LocalProtocolError(f"message breaks its kind's rule: {exc.reason}") from None
    hedged = random is system_random
    inner = _jose.jws_compact(
        _jose.jws_header(suite.sign, signing_key.kid, message.typ),
        suite.sign,
        dumps(message.to_claims()),
        signing_key.key,
        hedged=hedged,
    )
    crv, kid = recipient_key.crv, recipient_key.kid
    try:
        ephemeral = _jose.ephemeral(crv, random) if ephemeral_key is None else ephemeral_key
        return _jose.jwe_encode(
            suite.key, suite.enc, kid, crv, inner, recipient_key.key, ephemeral, random
        )
    except _jose.JoseError as exc:
        raise LocalProtocolError(f"cannot encrypt to this recipient: {exc}") from None


def open_message(
    token: bytes | str,
    *,
    decryption_keys: Mapping[str, DecryptionKey],
    resolve_sender: Callable[[str], SenderInfo | None],
    policy: OpenPolicy,
    now: float,
) -> tuple[Message, SenderInfo]:
    """Decrypt, verify and validate one message; raises ``InvalidMessage``.

    Exceptions raised by ``resolve_sender`` itself (a store outage, say) are the
    caller's and propagate unchanged; nothing else but ``InvalidMessage`` does.
    """
    if not math.isfinite(now):
        raise LocalProtocolError("now must be a finite POSIX time")
    raw = _bounded_bytes(token, policy.max_size)
    try:
        jwe = _jose.jwe_parse(raw)
        outer = jwe.header
        kid = outer.get("kid")
        key = decryption_keys.get(kid) if isinstance(kid, str) else None
        if key is None or outer.get("cty") != "JWT":
            raise InvalidMessage(reason="no decryption key for recipient kid, or cty not JWT")
        jws = _jose.jws_parse(_jose.jwe_decrypt(jwe, key.key, key.crv, _KEY_ALGS, _ENC_ALGS))
        kid, typ = jws.header.get("kid"), jws.header.get("typ")
        if not isinstance(kid, str) or not isinstance(typ, str):
            raise InvalidMessage(reason="inner kid/typ missing")
    except Exception as exc:
        raise _opaque(exc) from None
    sender = resolve_sender(kid)
    if sender is None:
        raise InvalidMessage(reason="unknown sender kid")
    try:
        suite, vkey = sender.suite, sender.verifying_key
        # Pinning (RFC 8725 §3.1): both layers must use exactly this sender's suite.
        if jws.header["alg"] != suite.sign or vkey.alg is not suite.sign:
            raise InvalidMessage(reason="inner alg is not the sender's pinned alg")
        if outer["alg"] != suite.key or outer["enc"] != suite.enc:
            raise InvalidMessage(reason="outer alg/enc is not the sender's pinned suite")
        if kid != vkey.kid:
            raise InvalidMessage(reason="resolved key does not carry the inner kid")
        _jose.verify(suite.sign, vkey.key, jws.signing_input, jws.signature)
        if typ not in policy.expected:
            raise InvalidMessage(reason=f"typ {typ!r} not expected at this endpoint")
        message = Message.from_claims(typ, loads_object(jws.payload))
        check_rule(message)
        if message.iss != sender.id or message.aud != policy.audience:
            raise InvalidMessage(reason="iss/aud mismatch")
        if message.iat > now + policy.max_skew:
            raise InvalidMessage(reason="issued in the future")
        if message.exp <= now:
            raise InvalidMessage(reason="expired")
        if not 0 < message.exp - message.iat <= policy.max_lifetime:
            raise InvalidMessage(reason="lifetime not in (0, max_lifetime]")
    except Exception as exc:
        raise _opaque(exc) from None
    return message, sender


def _bounded_bytes(token: object, max_size: int) -> bytes:
    # The cap comes first: nothing below runs on an oversized input.
    if type(token) is bytes:
        if len(token) > max_size:
            raise InvalidMessage(reason="token too large")
        return token
    if isinstance(token, str):
        if len(token) > max_size or not token.isascii():
            raise InvalidMessage(reason="token too large or not ASCII")
        return token.encode("ascii")
    if isinstance(token, bytes | bytearray | memoryview):
        if len(token) > max_size:
            raise InvalidMessage(reason="token too large")
        return bytes(token)
    raise InvalidMessage(reason="token is not bytes or str")


def _opaque(exc: Exception) -> InvalidMessage:
    """The one ``InvalidMessage`` for any failure while opening.

    The explicit checks raise ``InvalidMessage``/``JoseError``; the last case
    is the safety net that keeps a parser bug from becoming an oracle or a 500.
    """
    if isinstance(exc, InvalidMessage):
        return exc
    if isinstance(exc, _jose.JoseError | CodecError):
        return InvalidMessage(reason=str(exc))
    return InvalidMessage(reason=f"unexpected {type(exc).__name__}")
