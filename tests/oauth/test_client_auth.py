"""Client authentication (RFC 6749 §2.3, RFC 7523 §2.2/§3) as an attacker sees it.

Real client records (hatchway.clients) in a real SQLite store, which also keeps
the single-use assertion ids; assertions are signed with jwcrypto, a JOSE
library hatchway does not use, so a test cannot pass by sharing a bug.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from hatchway.clients import AuthMethod, new_client
from hatchway.flows.login.common import LoginRefused
from hatchway.flows.oauth.client_auth import (
    JWT_BEARER_ASSERTION,
    MAX_ASSERTION_LIFETIME,
    ClientAuthenticator,
    ClientAuthFailed,
    authenticator_for,
)
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.store import Store

ISSUER = "https://as.example"
TOKEN_ENDPOINT = ISSUER + "/oauth/token"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path}/store.sqlite3") as opened:
        yield opened


@pytest.fixture(scope="module")
def rs_key() -> jc_jwk.JWK:
    return jc_jwk.JWK.generate(kty="EC", crv="P-256", kid="rs-1")


@pytest.fixture(scope="module")
def rsa_key() -> jc_jwk.JWK:
    return jc_jwk.JWK.generate(kty="RSA", size=2048, kid="rs-rsa")


@pytest.fixture
def secrets(store: Store, rs_key: jc_jwk.JWK, rsa_key: jc_jwk.JWK) -> dict[str, str]:
    rng = SeededRandom()
    out: dict[str, str] = {}
    for client_id, method in (
        ("tv", AuthMethod.NONE),
        ("rs-basic", AuthMethod.CLIENT_SECRET_BASIC),
        ("rs-post", AuthMethod.CLIENT_SECRET_POST),
    ):
        record, secret = new_client(client_id, client_id, now=0, random=rng, auth_method=method)
        store.add_client(record)
        out[client_id] = secret or ""
    jwks = {"keys": [json.loads(rs_key.export_public()), json.loads(rsa_key.export_public())]}
    record, _ = new_client(
        "rs-jwt", "rs-jwt", now=0, random=rng, auth_method=AuthMethod.PRIVATE_KEY_JWT, jwks=jwks
    )
    store.add_client(record)
    off, secret = new_client(
        "rs-off", "rs-off", now=0, random=rng, auth_method=AuthMethod.CLIENT_SECRET_BASIC
    )
    store.add_client(off)
    store.set_client_enabled("rs-off", False, now=1)
    out["rs-off"] = secret or ""
    return out


@pytest.fixture
def auth(store: Store, clock: FrozenClock) -> ClientAuthenticator:
    return authenticator_for(store, issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT, clock=clock)


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def assertion(
    key: jc_jwk.JWK,
    now: float,
    *,
    alg: str = "ES256",
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    body: dict[str, Any] = {
        "iss": "rs-jwt",
        "sub": "rs-jwt",
        "aud": ISSUER,
        "exp": int(now) + 60,
        "iat": int(now),
        "jti": f"j-{now}",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    token = jc_jwt.JWT(header={"alg": alg, "kid": key.get("kid"), **(header or {})}, claims=body)
    token.make_signed_token(key)
    return str(token.serialize())


def jwt_form(token: str) -> dict[str, str]:
    return {"client_assertion_type": JWT_BEARER_ASSERTION, "client_assertion": token}


def refused(
    auth: ClientAuthenticator,
    header: str | None,
    form: dict[str, str],
    *,
    allow_public: bool = False,
) -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        auth.authenticate(header, form, allow_public=allow_public)
    return caught.value


# --- what works -------------------------------------------------------------


def test_each_registered_method_authenticates(
    auth: ClientAuthenticator,
    secrets: dict[str, str],
    rs_key: jc_jwk.JWK,
    rsa_key: jc_jwk.JWK,
    clock: FrozenClock,
) -> None:
    got = auth.authenticate(basic("rs-basic", secrets["rs-basic"]), {}, allow_public=False)
    assert (got.client_id, got.method) == ("rs-basic", "client_secret_basic")
    form = {"client_id": "rs-post", "client_secret": secrets["rs-post"]}
    assert auth.authenticate(None, form, allow_public=False).method == "client_secret_post"
    es = assertion(rs_key, clock())
    assert auth.authenticate(None, jwt_form(es), allow_public=False).client_id == "rs-jwt"
    # RS256 with the client's RSA key, and the token endpoint as audience.
    rs = assertion(rsa_key, clock(), alg="RS256", aud=[TOKEN_ENDPOINT], jti="j-rsa")
    assert auth.authenticate(None, jwt_form(rs), allow_public=False).method == "private_key_jwt"
    pub = auth.authenticate(None, {"client_id": "tv"}, allow_public=True)
    assert (pub.client_id, pub.confidential) == ("tv", False)


def test_basic_credentials_are_form_urlencoded(store: Store, auth: ClientAuthenticator) -> None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before base64."""
    record, secret = new_client(
        "rs:odd/id",
        "odd",
        now=0,
        random=SeededRandom(b"odd"),
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
    )
    store.add_client(record)
    assert secret is not None
    got = auth.authenticate(basic("rs:odd/id", secret), {}, allow_public=False)
    assert got.client_id == "rs:odd/id"


# --- what an attacker tries ----------------------------------------------------


def test_wrong_missing_or_misplaced_secrets(
    auth: ClientAuthenticator, secrets: dict[str, str]
) -> None:
    assert refused(auth, basic("rs-basic", "guess"), {}).error == "invalid_client"
    assert refused(auth, basic("rs-basic", secrets["rs-basic"][:-1]), {}).status_hint == 401
    # The right secret by the wrong method: a client uses only what it registered.
    form = {"client_id": "rs-basic", "client_secret": secrets["rs-basic"]}
    assert refused(auth, None, form).error == "invalid_client"
    assert refused(auth, basic("rs-post", secrets["rs-post"]), {}).error == "invalid_client"
    # A confidential client naming itself without credentials.
    assert refused(auth, None, {"client_id": "rs-basic"}, allow_public=True).error == (
        "invalid_client"
    )
    # Another client's secret.
    assert refused(auth, basic("rs-basic", secrets["rs-post"]), {}).error == "invalid_client"
    # Unknown and disabled clients.
    assert refused(auth, basic("nobody", "x"), {}).error == "invalid_client"
    assert refused(auth, basic("rs-off", secrets["rs-off"]), {}).error == "invalid_client"
    # client_id in the form must match the Basic credentials.
    header = basic("rs-basic", secrets["rs-basic"])
    assert refused(auth, header, {"client_id": "rs-post"}).error == "invalid_client"
    for bad in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic "):
        assert refused(auth, bad, {}).error == "invalid_client"


def test_public_clients_cannot_introspect(
    auth: ClientAuthenticator, secrets: dict[str, str]
) -> None:
    assert refused(auth, None, {"client_id": "tv"}).error == "invalid_client"
    assert refused(auth, None, {}).error == "invalid_client"


def test_two_methods_at_once_are_refused(
    auth: ClientAuthenticator, secrets: dict[str, str], rs_key: jc_jwk.JWK, clock: FrozenClock
) -> None:
    header = basic("rs-basic", secrets["rs-basic"])
    form = {"client_secret": secrets["rs-basic"]}
    assert refused(auth, header, form).error == "invalid_request"
    both = {"client_id": "rs-post", "client_secret": "x", **jwt_form(assertion(rs_key, clock()))}
    assert refused(auth, None, both).error == "invalid_request"


def test_assertion_is_single_use(
    auth: ClientAuthenticator, secrets: dict[str, str], rs_key: jc_jwk.JWK, clock: FrozenClock
) -> None:
    token = assertion(rs_key, clock())
    auth.authenticate(None, jwt_form(token), allow_public=False)
    assert refused(auth, None, jwt_form(token)).error == "invalid_client"
    # A new assertion reusing the jti is a replay too.
    clock.advance(5)
    again = assertion(rs_key, clock(), jti=f"j-{clock() - 5}")
    assert refused(auth, None, jwt_form(again)).error == "invalid_client"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://evil.example"},
        {"aud": [ISSUER + "/oauth/introspect"]},
        {"aud": None},
        {"iss": "rs-basic"},
        {"sub": "tv"},
        {"exp": None},
        {"exp": 0},
        {"exp": "soon"},
        {"jti": None},
        {"jti": ""},
        {"jti": "x" * 256},
        {"iat": 10**10},
        {"nbf": 10**10},
    ],
    ids=repr,
)
def test_assertion_claims_are_checked(
    auth: ClientAuthenticator,
    secrets: dict[str, str],
    rs_key: jc_jwk.JWK,
    clock: FrozenClock,
    claims: dict[str, Any],
) -> None:
    token = assertion(rs_key, clock(), **claims)
    assert refused(auth, None, jwt_form(token)).error == "invalid_client"


def test_assertion_lifetime_is_bounded(
    auth: ClientAuthenticator, secrets: dict[str, str], rs_key: jc_jwk.JWK, clock: FrozenClock
) -> None:
    """A long-lived assertion is a bearer credential; refuse anything past the cap."""
    far = assertion(rs_key, clock(), exp=int(clock()) + MAX_ASSERTION_LIFETIME + 5)
    assert refused(auth, None, jwt_form(far)).error == "invalid_client"
    token = assertion(rs_key, clock(), jti="expiring")
    clock.advance(61)
    assert refused(auth, None, jwt_form(token)).error == "invalid_client"


def test_assertion_keys_and_algorithms(
    auth: ClientAuthenticator, secrets: dict[str, str], rs_key: jc_jwk.JWK, clock: FrozenClock
) -> None:
    now = clock()
    # Signed by a key that is not registered, even when its kid is.
    stranger = jc_jwk.JWK.generate(kty="EC", crv="P-256", kid="rs-1")
    assert refused(auth, None, jwt_form(assertion(stranger, now))).error == "invalid_client"
    # ... and when it brings its own public key in the header (RFC 8725 §3.10).
    embedded = assertion(
        stranger, now, header={"jwk": json.loads(stranger.export_public())}, jti="emb"
    )
    assert refused(auth, None, jwt_form(embedded)).error == "invalid_client"
    # HMAC keyed with the client's *public* key (algorithm confusion) and "none".
    public_pem = rs_key.export_to_pem().decode()
    hmac_key = jc_jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public_pem.encode()).decode())
    confused = assertion(hmac_key, now, alg="HS256", header={"kid": "rs-1"}, jti="hs")
    assert refused(auth, None, jwt_form(confused)).error == "invalid_client"
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    payload = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "iss": "rs-jwt",
                    "sub": "rs-jwt",
                    "aud": ISSUER,
                    "exp": int(now) + 60,
                    "jti": "none",
                }
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    assert refused(auth, None, jwt_form(f"{header}.{payload}.")).error == "invalid_client"
    # Tampered payload, truncated signature, oversized, garbage, wrong assertion type.
    good = assertion(rs_key, now, jti="tamper")
    h, p, s = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    forged["sub"] = forged["iss"] = "rs-jwt"
    forged["exp"] += 100
    p2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for token in (f"{h}.{p2}.{s}", f"{h}.{p}.{s[:-4]}", good + "A" * 9000, "not-a-jwt", ""):
        assert refused(auth, None, jwt_form(token)).error == "invalid_client"
    wrong_type = {"client_assertion_type": "urn:x", "client_assertion": good}
    assert refused(auth, None, wrong_type).error == "invalid_client"
    # The untouched one still works: the failures above burnt nothing.
    assert auth.authenticate(None, jwt_form(good), allow_public=False).client_id == "rs-jwt"


def test_assertion_with_wrong_typ_is_refused(
    auth: ClientAuthenticator, secrets: dict[str, str], rs_key: jc_jwk.JWK, clock: FrozenClock
) -> None:
    token = assertion(rs_key, clock(), header={"typ": "at+jwt"})
    assert refused(auth, None, jwt_form(token)).error == "invalid_client"


@given(
    header=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.builds(lambda b: "Basic " + base64.b64encode(b).decode(), st.binary(max_size=40)),
    ),
    form=st.dictionaries(
        st.sampled_from(
            ["client_id", "client_secret", "client_assertion", "client_assertion_type"]
        ),
        st.text(max_size=80),
    ),
)
def test_any_request_is_answered_with_an_oauth_error_or_a_client(
    header: str | None, form: dict[str, str]
) -> None:
    """Property: the parser never fails with anything but an OAuth refusal."""
    auth = ClientAuthenticator(
        lookup=lambda _id: None,
        use_jti_once=lambda *_: True,
        issuer=ISSUER,
        token_endpoint=TOKEN_ENDPOINT,
        clock=lambda: 1_700_000_000.0,
    )
    with pytest.raises(LoginRefused) as caught:
        auth.authenticate(header, form, allow_public=True)
    assert caught.value.error in ("invalid_client", "invalid_request")


_PROPERTY_KEY = jc_jwk.JWK.generate(kty="EC", crv="P-256", kid="k")
_B64 = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
)


@given(
    assertion=st.one_of(
        st.text(max_size=200),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", _B64, _B64, _B64),
        st.builds(
            lambda header, body: (
                ".".join(
                    base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                    for part in (header, body)
                )
                + ".c2ln"
            ),
            st.dictionaries(
                st.sampled_from(["alg", "kid", "typ", "jwk", "crit"]),
                st.one_of(st.text(max_size=10), st.integers(), st.none()),
            ),
            st.dictionaries(
                st.sampled_from(["iss", "sub", "aud", "exp", "jti", "iat"]),
                st.one_of(st.text(max_size=10), st.integers(), st.floats()),
            ),
        ),
    )
)
def test_assertion_parser_refuses_anything_unsigned(assertion: str) -> None:
    """Property: no header, claim set or garbage gets past without a valid signature,
    and nothing but ``invalid_client`` comes out."""
    record, _ = new_client(
        "rs-jwt",
        "rs-jwt",
        now=0,
        random=SeededRandom(),
        auth_method=AuthMethod.PRIVATE_KEY_JWT,
        jwks={"keys": [json.loads(_PROPERTY_KEY.export_public())]},
    )
    auth = ClientAuthenticator(
        lookup=lambda _id: record,
        use_jti_once=lambda *_: True,
        issuer=ISSUER,
        token_endpoint=TOKEN_ENDPOINT,
        clock=lambda: 1_700_000_000.0,
    )
    form = {"client_id": "rs-jwt", **jwt_form(assertion)}
    with pytest.raises(ClientAuthFailed):
        auth.authenticate(None, form, allow_public=False)
