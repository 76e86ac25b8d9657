"""Server-signed JWTs (RFC 7519) for bearer use: the enrolment first token, access tokens.

Built on joserfc. Every verification failure becomes the opaque ``InvalidMessage``;
the JOSE algorithm is pinned by the caller and never read from the token (RFC 8725 §3.1),
and ``typ`` is checked so one kind of token can never pass as another (RFC 8725 §3.11).
"""

from __future__ import annotations

import contextlib
import hmac
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from joserfc import jwk, jwt
from joserfc.errors import JoseError, SecurityWarning

from hatchway.errors import InvalidMessage

ALLOWED_BEARER_ALGS = ("ES256", "EdDSA")
MAX_BEARER_SIZE = 8192


@contextlib.contextmanager
def eddsa_allowed() -> Iterator[None]:
    """joserfc warns that the name "EdDSA" is deprecated by RFC 9864 (in favour of
    "Ed25519"). hatchway allow-lists EdDSA on purpose for interoperability with JOSE
    libraries that do not know the new name yet, so that one warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
        yield


def import_jwk(data: Mapping[str, Any]) -> Any:
    """Import a JWK dict as a joserfc key, rejecting anything malformed opaquely."""
    try:
        return jwk.import_key(dict(data))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidMessage(f"bad jwk: {exc}") from None


def sign_jwt(private_jwk: Mapping[str, Any], *, typ: str, claims: Mapping[str, Any]) -> str:
    alg = str(private_jwk.get("alg") or "ES256")
    if alg not in ALLOWED_BEARER_ALGS:
        raise ValueError(f"refusing to sign with {alg}")
    header = {"alg": alg, "typ": typ, "kid": private_jwk.get("kid")}
    return jwt.encode(header, dict(claims), import_jwk(private_jwk), algorithms=[alg])


def verify_jwt(
    token: str,
    public_jwk: Mapping[str, Any],
    *,
    typ: str,
    issuer: str,
    audience: str,
    now: float,
    max_lifetime: int,
) -> dict[str, Any]:
    """Verify signature, ``typ``, ``iss``, ``aud``, ``iat``/``exp`` and return the claims."""
    if not isinstance(token, str) or len(token) > MAX_BEARER_SIZE:
        raise InvalidMessage("bearer token missing or oversized")
    alg = str(public_jwk.get("alg") or "ES256")
    try:
        decoded = jwt.decode(token, import_jwk(public_jwk), algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidMessage(f"bearer token rejected: {type(exc).__name__}") from None
    if decoded.header.get("typ") != typ or decoded.header.get("alg") != alg:
        raise InvalidMessage("bearer token has the wrong typ or alg")
    claims = decoded.claims
    _require_equal(claims.get("iss"), issuer, "iss")
    _require_equal(claims.get("aud"), audience, "aud")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not (isinstance(iat, int) and isinstance(exp, int)) or not (_is_int(iat) and _is_int(exp)):
        raise InvalidMessage("bearer token lacks integer iat/exp")
    if exp <= now or iat > now + 60 or exp - iat > max_lifetime:
        raise InvalidMessage("bearer token expired, future-dated or too long-lived")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise InvalidMessage("bearer token lacks jti")
    return claims


def _require_equal(value: object, expected: str, name: str) -> None:
    if not isinstance(value, str) or not hmac.compare_digest(value.encode(), expected.encode()):
        raise InvalidMessage(f"bearer token {name} mismatch")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
