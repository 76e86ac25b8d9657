"""Client authentication at hatchway's OAuth endpoints (RFC 6749 §2.3, RFC 7523 §2.2).

One call, :meth:`ClientAuthenticator.authenticate`, takes what the request
carried (the ``Authorization`` header and the form) and returns the registered
client it proved to be, or raises :class:`ClientAuthFailed` (``invalid_client``,
HTTP 401). Supported methods, exactly the RFC 8414 names listed in the metadata:

* ``none`` — a public client names itself with ``client_id`` (RFC 6749 §2.1;
  RFC 7009 §2.1 lets public clients revoke that way). Never enough for
  introspection, which only confidential clients may use (RFC 7662 §2.1).
* ``client_secret_basic`` / ``client_secret_post`` — RFC 6749 §2.3.1; the
  Basic credentials are form-urlencoded before base64, as that section says.
* ``private_key_jwt`` — RFC 7523 §2.2 / §3, verified with the JWK set
  registered for the client: the algorithm must be in :data:`ASSERTION_ALGS` and
  match the key; ``iss`` = ``sub`` = the client; ``aud`` names the issuer or the
  token endpoint; ``exp`` is required and at most :data:`MAX_ASSERTION_LIFETIME`
  ahead; ``jti`` is required and single-use until ``exp`` in the store, so one
  captured assertion authenticates once, on any replica.

A client uses only the method it registered; two methods in one request are
refused (RFC 6749 §2.3). Every failure is one opaque ``invalid_client`` to the
peer (STYLE.md §5); the reason goes to the server log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from joserfc import jws, jwt
from joserfc.errors import JoseError

from hatchway import strictjson
from hatchway.clients import AuthMethod, ClientRecord
from hatchway.errors import InvalidMessage
from hatchway.flows.clients.registry import REALM, parse_basic_authorization
from hatchway.flows.login.common import LoginRefused
from hatchway.runtime import Clock
from hatchway.tokens import eddsa_allowed, import_jwk

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Client assertion algorithms accepted (RFC 7518 names); ``none`` and HMAC never.
ASSERTION_ALGS = ("ES256", "ES384", "EdDSA", "PS256", "RS256")
#: An assertion may be valid for at most this long from now (seconds).
MAX_ASSERTION_LIFETIME = 300
#: Clock skew tolerated on ``iat`` / ``nbf``.
SKEW = 60
MAX_ASSERTION_SIZE = 8192
_MAX_FIELD = 4096
_KTY_FOR_ALG = {"ES256": "EC", "ES384": "EC", "EdDSA": "OKP", "PS256": "RSA", "RS256": "RSA"}
_CRV_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}
_ASSERTION_TYPES = (None, "JWT", "client-authentication+jwt")

#: The RFC 8414 method names, in the order the metadata lists them.
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
CONFIDENTIAL_AUTH_METHODS = AUTH_METHODS[1:]


class ClientAuthFailed(LoginRefused):
    """RFC 6749 §5.2 ``invalid_client``: HTTP 401 with a Basic challenge."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "invalid_client",
            "client authentication failed",
            status=401,
            reason=reason,
            challenge=f'Basic realm="{REALM}"',
        )


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    client: ClientRecord
    method: str

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def confidential(self) -> bool:
        return self.method != "none"


@dataclass(frozen=True, slots=True)
class _Presented:
    method: str
    client_id: str
    secret: str = ""
    assertion: str = ""


class ClientAuthenticator:
    """Authenticates clients against the registry; see the module docstring."""

    def __init__(
        self,
        *,
        lookup: Callable[[str], ClientRecord | None],
        use_jti_once: Callable[[str, float, float], bool],
        issuer: str,
        token_endpoint: str,
        clock: Clock,
    ) -> None:
        self._lookup = lookup
        self._use_jti_once = use_jti_once
        self._audiences = (issuer, token_endpoint)
        self._clock = clock

    def authenticate(
        self, authorization: str | None, form: Mapping[str, str], *, allow_public: bool
    ) -> AuthenticatedClient:
        """The registered client the request proved to be, or :class:`ClientAuthFailed`."""
        presented = _presented(authorization, form)
        client = self._lookup(presented.client_id)
        if client is None or not client.enabled:
            _burn_time(presented)
            raise ClientAuthFailed("unknown or disabled client")
        if client.token_endpoint_auth_method is not AuthMethod(presented.method):
            _burn_time(presented)
            raise ClientAuthFailed(
                f"client registered for {client.token_endpoint_auth_method}, "
                f"presented {presented.method}",
            )
        if presented.method == "none":
            if not allow_public:
                raise ClientAuthFailed("this endpoint is for confidential clients only")
        elif presented.method == "private_key_jwt":
            self._verify_assertion(client, presented.assertion)
        elif not client.verify_secret(presented.secret):
            raise ClientAuthFailed("wrong client secret")
        return AuthenticatedClient(client, presented.method)

    # --- RFC 7523 §3 -----------------------------------------------------------

    def _verify_assertion(self, client: ClientRecord, assertion: str) -> None:
        try:
            claims = self._assertion_claims(client, assertion)
        except InvalidMessage as exc:
            raise ClientAuthFailed(f"client assertion refused: {exc.reason}") from None
        now = self._clock()
        exp = float(claims["exp"])
        digest = hashlib.sha256(f"{client.client_id}\x00{claims['jti']}".encode()).hexdigest()
        if not self._use_jti_once(f"client-assertion:{digest}", exp + SKEW, now):
            raise ClientAuthFailed("client assertion replayed")

    def _assertion_claims(self, client: ClientRecord, assertion: str) -> dict[str, Any]:
        if not assertion or len(assertion) > MAX_ASSERTION_SIZE:
            raise InvalidMessage("assertion missing or oversized")
        try:
            header = jws.extract_compact(assertion.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise InvalidMessage("assertion is not a compact JWS") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGS:
            raise InvalidMessage(f"algorithm {alg!r} not allowed")
        if header.get("typ") not in _ASSERTION_TYPES:
            raise InvalidMessage("wrong typ")
        decoded = None
        for jwk_data in _candidate_keys(client.jwks, str(alg), header.get("kid")):
            try:
                with eddsa_allowed():
                    decoded = jwt.decode(assertion, import_jwk(jwk_data), algorithms=[alg])
                break
            except (JoseError, InvalidMessage, ValueError, TypeError):
                continue
        if decoded is None:
            raise InvalidMessage("no registered key verifies the assertion")
        claims: dict[str, Any] = dict(decoded.claims)
        self._check_claims(client.client_id, claims)
        return claims

    def _check_claims(self, client_id: str, claims: dict[str, Any]) -> None:
        now = self._clock()
        for name in ("iss", "sub"):
            value = claims.get(name)
            if not isinstance(value, str) or not hmac.compare_digest(
                value.encode(), client_id.encode()
            ):
                raise InvalidMessage(f"{name} is not the client")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self._audiences for a in audiences):
            raise InvalidMessage("aud names neither the issuer nor the token endpoint")
        exp = claims.get("exp")
        if not _is_number(exp) or not now < exp <= now + MAX_ASSERTION_LIFETIME:
            raise InvalidMessage("exp missing, past, or too far ahead")
        for name in ("iat", "nbf"):
            value = claims.get(name)
            if value is not None and (not _is_number(value) or value > now + SKEW):
                raise InvalidMessage(f"{name} malformed or in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise InvalidMessage("jti missing or malformed")


def _candidate_keys(jwks: dict[str, Any] | None, alg: str, kid: object) -> list[dict[str, Any]]:
    """Registered keys that may verify ``alg``: by ``kid`` when the header has one.

    Keys come only from the registry, never from ``jwk``/``jku``/``x5u`` headers
    (RFC 8725 §3.10), and a key's own ``alg``/``use`` must not contradict.
    """
    keys = jwks.get("keys", []) if isinstance(jwks, dict) else []
    found = []
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") != _KTY_FOR_ALG[alg]:
            continue
        if alg in _CRV_FOR_ALG and key.get("crv") != _CRV_FOR_ALG[alg]:
            continue
        if key.get("alg") not in (None, alg) or key.get("use") not in (None, "sig"):
            continue
        if kid is not None and key.get("kid") != kid:
            continue
        found.append(key)
    return found


def _presented(authorization: str | None, form: Mapping[str, str]) -> _Presented:
    """Which method the request used, and its credentials; at most one method."""
    form_id = form.get("client_id", "")
    methods: list[_Presented] = []
    if authorization is not None and authorization.strip():
        # The registry's parser: Basic only, form-urldecoded (RFC 6749 §2.3.1).
        client_id, secret = parse_basic_authorization(authorization)
        # Some libraries identify a public client by Basic with an empty secret.
        method = "client_secret_basic" if secret else "none"
        methods.append(_Presented(method, client_id, secret))
    if "client_secret" in form:
        methods.append(_Presented("client_secret_post", form_id, form["client_secret"]))
    if "client_assertion" in form or "client_assertion_type" in form:
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise ClientAuthFailed("unsupported client_assertion_type")
        assertion = form.get("client_assertion", "")
        methods.append(
            _Presented("private_key_jwt", _unverified_sub(assertion, form_id), "", assertion)
        )
    if len(methods) > 1:
        raise LoginRefused("invalid_request", "use exactly one client authentication method")
    if not methods:
        methods.append(_Presented("none", form_id))
    chosen = methods[0]
    if not chosen.client_id or len(chosen.client_id) > _MAX_FIELD:
        raise ClientAuthFailed("no client_id")
    if form_id and form_id != chosen.client_id:
        raise ClientAuthFailed("client_id does not match the credentials")
    return chosen


def _unverified_sub(assertion: str, form_id: str) -> str:
    """The client an assertion claims to be, to find its keys; verified afterwards."""
    if form_id:
        return form_id
    try:
        payload = jws.extract_compact(assertion.encode("ascii")).payload
        # Strict and depth-bounded: json.loads let 2,500 nested brackets, which fit
        # the form cap, raise RecursionError (a 500) before any key was checked.
        claims = strictjson.loads(payload)
    except (JoseError, ValueError, TypeError, UnicodeError):
        return ""
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else ""


def _burn_time(presented: _Presented) -> None:
    """Hash a secret for unknown clients too, so timing does not tell them apart."""
    if presented.secret:
        hmac.compare_digest(hashlib.sha256(presented.secret.encode()).digest(), b"\0" * 32)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def authenticator_for(
    store: Any, *, issuer: str, token_endpoint: str, clock: Clock
) -> ClientAuthenticator:
    """The authenticator over hatchway's store: its client registry, and its
    single-use table for assertion ``jti`` values (shared by every replica)."""

    def use_once(key: str, exp: float, now: float) -> bool:
        return bool(store.use_token_once(key, exp=exp, now=now))

    return ClientAuthenticator(
        lookup=store.get_client,
        use_jti_once=use_once,
        issuer=issuer,
        token_endpoint=token_endpoint,
        clock=clock,
    )
