"""Issue 8 §3 done-criteria against a real ``hatchway serve``: a resource server
built on a standard JWT library (the exact example in docs/login.md, jwcrypto +
stdlib) accepts the access token and introspection agrees; revocation and
``hatchway logout`` make introspection and whoami fail. Also the metadata
(RFC 8414 §2) and HSTS on discovery and JWKS.

The device is the real ``hatchway login`` CLI; the phone is hatchway's phone
client (SCRAM in Python) — the browser flow is covered in tests/login_e2e.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import threading
import types
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from hatchway.login.phone import PhoneClient
from hatchway.runtime import system_clock
from hatchway.server.process import ServerProcess
from tests.login_e2e.conftest import PASSWORD, DeviceCli, add_user, hatchway, start_server

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "login.md"
_EXAMPLE = re.compile(r"<!-- example: resource_server.py -->\n```python\n(.*?)```", re.S)


def example_module() -> types.ModuleType:
    """The resource server exactly as docs/login.md shows it."""
    match = _EXAMPLE.search(DOCS.read_text(encoding="utf-8"))
    assert match, "docs/login.md lost its example resource server"
    module = types.ModuleType("resource_server_example")
    exec(compile(match.group(1), str(DOCS), "exec"), module.__dict__)  # noqa: S102 - our doc
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("rs"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def rs_key() -> jc_jwk.JWK:
    return jc_jwk.JWK.generate(kty="EC", crv="P-256", kid="api-key-1")


@pytest.fixture(scope="module")
def registered(
    server: ServerProcess, rs_key: jc_jwk.JWK, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """What an operator registers with ``hatchway clients add``: an API with a
    secret and an API with a key (private_key_jwt). ``hatchway-cli`` registers
    itself on first run. Returns the secret."""
    api = hatchway(server, "clients", "add", "my-api", "--name", "My API", "--confidential")
    assert api["token_endpoint_auth_method"] == "client_secret_basic"
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [json.loads(rs_key.export_public())]}))
    keyed = hatchway(
        server,
        "clients",
        "add",
        "my-keyed-api",
        "--name",
        "My keyed API",
        "--auth-method",
        "private_key_jwt",
        "--jwks",
        str(jwks),
    )
    assert keyed["token_endpoint_auth_method"] == "private_key_jwt"
    return {"my-api": str(api["client_secret"])}


@pytest.fixture
def https(server: ServerProcess) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(base_url=server.https_url, verify=context, timeout=30) as client:
        yield client


def sign_in(server: ServerProcess, tmp_path: Path, https: httpx.Client, user: str) -> Path:
    """``hatchway login`` as a subprocess, approved by the phone; its token file."""
    device = DeviceCli(server, tmp_path, user)
    try:
        started = device.next()
        assert started["event"] == "started"
        phone = PhoneClient(https)
        approver = threading.Thread(
            target=lambda: phone.approve(
                phone.open(started["verification_uri_complete"]),
                PASSWORD,
                origin=server.https_url,
            )
        )
        approver.start()
        assert device.next()["event"] == "signed_in"
        approver.join(30)
        assert device.wait() == 0
    finally:
        device.close()
    return device.tokens


def cli(server: ServerProcess, *args: str) -> dict[str, Any]:
    env = server.env()
    env["HATCHWAY_CA_FILE"] = str(server.ca_file)
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    result["_rc"] = done.returncode
    return result


def keyed_assertion(key: jc_jwk.JWK, server: ServerProcess, jti: str) -> str:
    now = int(system_clock())
    token = jc_jwt.JWT(
        header={"alg": "ES256", "kid": key.get("kid")},
        claims={
            "iss": "my-keyed-api",
            "sub": "my-keyed-api",
            "aud": server.https_url,
            "iat": now,
            "exp": now + 60,
            "jti": jti,
        },
    )
    token.make_signed_token(key)
    return str(token.serialize())


def test_resource_server_accepts_and_revocation_and_logout_end_it(
    server: ServerProcess,
    registered: dict[str, str],
    rs_key: jc_jwk.JWK,
    https: httpx.Client,
    tmp_path: Path,
) -> None:
    add_user(server, "alice")
    example = example_module()
    rs = example.HatchwayTokens(
        server.https_url,
        client_id="my-api",
        client_secret=registered["my-api"],
        ca_file=str(server.ca_file),
    )
    tokens_file = sign_in(server, tmp_path, https, "alice")
    saved = json.loads(tokens_file.read_text())
    access = saved["access_token"]

    # The standard-library resource server accepts the token offline...
    claims = rs.check_offline(access)
    assert claims["sub"] == "alice" and claims["client_id"] == "hatchway-cli"
    # ...and introspection agrees, field by field.
    active = rs.introspect(access)
    assert active["active"] is True
    for name in ("sub", "client_id", "scope", "exp", "iat", "iss", "aud", "jti"):
        assert active[name] == claims[name]
    assert rs.user_of(f"Bearer {access}") == claims
    # A resource server authenticating with private_key_jwt sees the same.
    keyed = https.post(
        "/oauth/introspect",
        data={
            "token": access,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": keyed_assertion(rs_key, server, "a-1"),
        },
    )
    assert keyed.status_code == 200 and keyed.json()["jti"] == claims["jti"]
    assert cli(server, "whoami", "--tokens", str(tokens_file))["username"] == "alice"

    # hatchway logout: revokes the session and deletes the token file.
    out = cli(server, "logout", "--tokens", str(tokens_file))
    assert out["event"] == "signed_out" and out["_rc"] == 0
    assert not tokens_file.exists()
    assert rs.introspect(access) == {"active": False}
    assert rs.user_of(f"Bearer {access}") is None
    whoami = https.get("/api/whoami", headers={"Authorization": f"Bearer {access}"})
    assert whoami.status_code == 401
    refresh = https.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": saved["refresh_token"],
            "client_id": "hatchway-cli",
        },
    )
    assert refresh.json()["error"] == "invalid_grant"
    # Stated honestly in docs/login.md: the offline check alone cannot see it
    # before the token's exp.
    assert rs.check_offline(access)["jti"] == claims["jti"]
    assert cli(server, "logout", "--tokens", str(tokens_file))["_rc"] != 0  # nothing left

    # RFC 7009 on an access token: that token dies, the session lives on.
    tokens_file = sign_in(server, tmp_path, https, "alice")
    saved = json.loads(tokens_file.read_text())
    revoked = https.post(
        "/oauth/revoke",
        data={
            "token": saved["access_token"],
            "client_id": "hatchway-cli",
        },
    )
    assert revoked.status_code == 200 and revoked.content == b""
    assert revoked.headers["strict-transport-security"].startswith("max-age=")
    assert rs.introspect(saved["access_token"]) == {"active": False}
    assert (
        https.get(
            "/api/whoami", headers={"Authorization": f"Bearer {saved['access_token']}"}
        ).status_code
        == 401
    )
    # whoami refreshes after the 401 and carries on with a new access token.
    again = cli(server, "whoami", "--tokens", str(tokens_file))
    assert again["username"] == "alice" and again["refreshed"] is True


def test_revocation_and_introspection_refuse_what_they_must(
    server: ServerProcess,
    registered: dict[str, str],
    https: httpx.Client,
    tmp_path: Path,
) -> None:
    add_user(server, "bob")
    tokens_file = sign_in(server, tmp_path, https, "bob")
    saved = json.loads(tokens_file.read_text())
    token = saved["access_token"]
    # The operator sees when the sign-in ends for good (90 days by default).
    (listed,) = hatchway(server, "sessions", "list", "--user", "bob")["sessions"]
    assert listed["expires_at"] == pytest.approx(listed["created_at"] + 90 * 24 * 3600)
    # No client authentication, a public client, a wrong secret: 401 invalid_client.
    for auth, data in (
        (None, {"token": token}),
        (None, {"token": token, "client_id": "hatchway-cli"}),
        (("my-api", "wrong"), {"token": token}),
        (("nobody", "x"), {"token": token}),
    ):
        r = https.post("/oauth/introspect", data=data, auth=auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
        assert "active" not in r.json()
    # Another (unregistered) client cannot revoke it; a client id it does not
    # own gets 200 and revokes nothing.
    assert https.post("/oauth/revoke", data={"token": token, "client_id": "x"}).status_code == 401
    assert hatchway(server, "clients", "add", "other-tv", "--name", "Other TV")["_rc"] == 0
    for hint in ("refresh_token", "access_token"):
        sneaky = https.post(
            "/oauth/revoke",
            data={
                "token": saved["refresh_token"] if hint == "refresh_token" else token,
                "token_type_hint": hint,
                "client_id": "other-tv",
            },
        )
        assert sneaky.status_code == 200
    introspected = https.post(
        "/oauth/introspect", data={"token": token}, auth=("my-api", registered["my-api"])
    )
    assert introspected.json()["active"] is True
    # Junk is inactive, and only that.
    for junk in ("junk", token[:-2], saved["refresh_token"]):
        r = https.post(
            "/oauth/introspect", data={"token": junk}, auth=("my-api", registered["my-api"])
        )
        assert r.status_code == 200 and r.json() == {"active": False}
    # Logout the server refuses (here: a client it does not know) keeps the token
    # file, so the session can still be ended by a retry.
    ghost = tmp_path / "ghost.json"
    ghost.write_text(json.dumps({**saved, "client_id": "ghost-cli"}))
    refused = cli(server, "logout", "--tokens", str(ghost))
    assert refused["_rc"] != 0 and "invalid_client" in refused["error"]
    assert ghost.exists()
    assert (
        https.post(
            "/oauth/introspect", data={"token": token}, auth=("my-api", registered["my-api"])
        ).json()["active"]
        is True
    )
    # A missing token is a malformed request.
    r = https.post("/oauth/revoke", data={"client_id": "hatchway-cli"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_metadata_has_every_required_field_and_hsts(
    server: ServerProcess, https: httpx.Client
) -> None:
    r = https.get("/.well-known/oauth-authorization-server")
    meta = r.json()
    base = server.https_url
    # RFC 8414 §2 REQUIRED: issuer, token_endpoint (a non-implicit grant exists),
    # response_types_supported; authorization_endpoint only for grants that use it.
    assert meta["issuer"] == base
    assert meta["token_endpoint"] == base + "/oauth/token"
    assert meta["response_types_supported"] == []
    assert "authorization_endpoint" not in meta
    assert meta["revocation_endpoint"] == base + "/oauth/revoke"
    assert meta["introspection_endpoint"] == base + "/oauth/introspect"
    every = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
    assert meta["token_endpoint_auth_methods_supported"] == every
    assert meta["revocation_endpoint_auth_methods_supported"] == every
    assert meta["introspection_endpoint_auth_methods_supported"] == every[1:]
    for prefix in ("token", "revocation", "introspection"):
        algs = meta[f"{prefix}_endpoint_auth_signing_alg_values_supported"]
        assert "none" not in algs and "RS256" in algs and "ES256" in algs
    # authlib's RFC 8414 validator agrees on everything it checks, bar the one
    # point where it and hatchway differ on purpose (an empty response_types list).
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

    checked = AuthorizationServerMetadata(meta)
    for key in checked.REGISTRY_KEYS:
        if key != "response_types_supported":
            getattr(checked, f"validate_{key}")()
    # HSTS on discovery and JWKS, like every other HTTPS response.
    for path in (
        "/.well-known/oauth-authorization-server",
        "/jwks.json",
        "/no-such-page",
        "/login/static/login.css",
    ):
        response = https.get(path)
        assert response.headers["strict-transport-security"] == "max-age=31536000", path
    assert r.headers["x-content-type-options"] == "nosniff"


def test_example_refuses_forged_and_foreign_tokens(
    server: ServerProcess, registered: dict[str, str]
) -> None:
    """The example's offline check is a real check: a token signed by another
    key, or one of another typ, does not pass it."""
    example = example_module()
    rs = example.HatchwayTokens(
        server.https_url,
        client_id="my-api",
        client_secret=registered["my-api"],
        ca_file=str(server.ca_file),
    )
    forger = jc_jwk.JWK.generate(kty="EC", crv="P-256")
    served = json.loads(rs.keys.export(private_keys=False))
    kid = next(k["kid"] for k in served["keys"] if k.get("use") == "sig")
    now = int(system_clock())
    forged = jc_jwt.JWT(
        header={"alg": "ES256", "typ": "at+jwt", "kid": kid},
        claims={
            "iss": server.https_url,
            "aud": server.https_url + "/api",
            "sub": "alice",
            "iat": now,
            "exp": now + 60,
            "jti": "f",
        },
    )
    forged.make_signed_token(forger)
    with pytest.raises(Exception):
        rs.check_offline(forged.serialize())
    assert rs.user_of(f"Bearer {forged.serialize()}") is None
    assert rs.introspect(forged.serialize()) == {"active": False}
    with pytest.raises(urllib.error.HTTPError) as caught:
        example.HatchwayTokens(
            server.https_url,
            client_id="my-api",
            client_secret="wrong",
            ca_file=str(server.ca_file),
        ).introspect("x")
    assert caught.value.code == 401
    caught.value.close()


def test_authlib_clients_use_the_endpoints_as_they_are(
    server: ServerProcess, registered: dict[str, str], https: httpx.Client, tmp_path: Path
) -> None:
    """Interop: authlib's OAuth 2 session, with nothing hatchway-specific, introspects
    as a confidential client (its default client_secret_basic) and revokes as the
    public hatchway-cli client (client_id in the body, RFC 7009 §2.1)."""
    from authlib.integrations.requests_client import OAuth2Session

    add_user(server, "carol")
    saved = json.loads(sign_in(server, tmp_path, https, "carol").read_text())
    meta = https.get("/.well-known/oauth-authorization-server").json()
    ca = str(server.ca_file)
    with OAuth2Session("my-api", registered["my-api"]) as rs:
        answer = rs.introspect_token(
            meta["introspection_endpoint"], token=saved["access_token"], verify=ca
        )
        assert answer.status_code == 200 and answer.json()["sub"] == "carol"
        with OAuth2Session("hatchway-cli", revocation_endpoint_auth_method="none") as device:
            revoked = device.revoke_token(
                meta["revocation_endpoint"],
                token=saved["refresh_token"],
                token_type_hint="refresh_token",
                verify=ca,
            )
        assert revoked.status_code == 200
        after = rs.introspect_token(
            meta["introspection_endpoint"], token=saved["access_token"], verify=ca
        )
        assert after.json() == {"active": False}
