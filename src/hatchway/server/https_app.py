"""The HTTPS listener: discovery metadata (RFC 8414), JWKS and enrolment (claim steps 1–3).

Thin adapter: parse the HTTP request, call the enrolment flow, map its errors to
OAuth-style JSON errors. Later flows (login, secure-element web app) mount here too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hatchway import strictjson
from hatchway.flows.enrolment import KEYS_PATH, MESSAGE_PATH, TOKEN_PATH, EnrolmentRejected
from hatchway.flows.firmware import firmware_metadata
from hatchway.flows.login.service import (
    DEVICE_AUTHORIZATION_PATH,
    REFRESH_GRANT,
    WAIT_PATH,
    WHOAMI_PATH,
)
from hatchway.flows.login.service import TOKEN_PATH as LOGIN_TOKEN_PATH
from hatchway.flows.oauth.client_auth import (
    ASSERTION_ALGS,
    AUTH_METHODS,
    CONFIDENTIAL_AUTH_METHODS,
)
from hatchway.flows.oauth.introspection import INTROSPECTION_PATH
from hatchway.flows.oauth.revocation import REVOCATION_PATH
from hatchway.login import GrantType
from hatchway.mqtt.discovery import metadata_entries
from hatchway.msgsec import EncAlg, KeyAlg, SignAlg
from hatchway.pki import CRL_PATH
from hatchway.server.context import ServerContext
from hatchway.server.edge import HTTPS_SHAPE, install_edge
from hatchway.server.login_routes import add_login_routes
from hatchway.server.logs import RequestLog
from hatchway.server.oauth_routes import add_oauth_routes
from hatchway.server.pki_routes import add_crl_route
from hatchway.server.plain_app import add_message_route
from hatchway.server.se_routes import add_se_routes

log = logging.getLogger("hatchway.enrolment")

MAX_JSON_BODY = 16 * 1024
HSTS = "max-age=31536000"
SECURITY_HEADERS = {
    "Strict-Transport-Security": HSTS,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


# Discovery and JWKS may be cached briefly; they carry the other headers too.
_PUBLIC_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "max-age=300"}


def error(status: int, code: str, description: str = "") -> JSONResponse:
    body = {"error": code}
    if description:
        body["error_description"] = description
    return JSONResponse(body, status_code=status, headers=SECURITY_HEADERS)


async def read_json(request: Request) -> dict[str, Any] | None:
    """A JSON object body of bounded size, or ``None`` for anything else."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            return None
    try:
        # Strict: a lone surrogate here once reached hashlib and sqlite3 as a 500.
        return strictjson.loads_object(body)
    except strictjson.JsonError:
        return None


class StrictTransportSecurity:
    """Adds HSTS to every response of the HTTPS listener that lacks it (discovery,
    JWKS, static files, 404s alike), so no route can forget it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, with_hsts)


def metadata(ctx: ServerContext) -> dict[str, Any]:
    """RFC 8414 §2 metadata: every REQUIRED field, and only what is implemented."""
    s = ctx.settings
    algs = list(ASSERTION_ALGS)
    return {
        "issuer": s.issuer,
        "jwks_uri": s.issuer + "/jwks.json",
        # REQUIRED by RFC 8414 §2. Empty, honestly: hatchway has no authorization
        # endpoint (device flow only), so it supports no response_type at all.
        "response_types_supported": [],
        "grant_types_supported": [GrantType.DEVICE_CODE.value, REFRESH_GRANT],
        "device_authorization_endpoint": s.issuer + DEVICE_AUTHORIZATION_PATH,
        "token_endpoint": s.issuer + LOGIN_TOKEN_PATH,
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint": s.issuer + REVOCATION_PATH,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint": s.issuer + INTROSPECTION_PATH,
        "introspection_endpoint_auth_methods_supported": list(CONFIDENTIAL_AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "hatchway_device_wait_endpoint": s.issuer + WAIT_PATH,
        "hatchway_userinfo_endpoint": s.issuer + WHOAMI_PATH,
        "hatchway_enrolment_token_endpoint": s.issuer + TOKEN_PATH,
        "hatchway_enrolment_keys_endpoint": s.issuer + KEYS_PATH,
        "hatchway_message_endpoint": s.plain_base_url + MESSAGE_PATH,
        "hatchway_message_signing_alg_values_supported": [a.value for a in SignAlg],
        "hatchway_message_encryption_alg_values_supported": [a.value for a in KeyAlg],
        "hatchway_message_encryption_enc_values_supported": [a.value for a in EncAlg],
        "hatchway_max_message_size": s.max_message_size,
        # The dev CA's CRL of revoked device certificates (docs/revocation.md).
        "hatchway_crl_uri": s.plain_base_url + CRL_PATH,
        # Issue 9: the firmware keys this server publishes under (status, not_after),
        # and where encrypted chunks are fetched (GET {endpoint}<release>/<index>).
        "hatchway_firmware": firmware_metadata(ctx.store, s.plain_base_url),
        **metadata_entries(s),
    }


def build_https_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(title="hatchway", docs_url=None, redoc_url=None, openapi_url=None)
    install_edge(app, HTTPS_SHAPE, body_timeout=ctx.settings.body_timeout)

    @app.get("/.well-known/oauth-authorization-server")
    async def discovery() -> JSONResponse:
        # In a worker thread: the firmware keys come from the store.
        return JSONResponse(await run_in_threadpool(metadata, ctx), headers=_PUBLIC_HEADERS)

    @app.get("/jwks.json")
    async def jwks() -> JSONResponse:
        # Every live message-key generation (docs/key-rotation.md) and the token key.
        keyring, now = ctx.messages.keyring, ctx.messages.clock()
        if keyring.due(now):
            await run_in_threadpool(keyring.refresh, now)
        return JSONResponse(keyring.jwk_set(now), headers=_PUBLIC_HEADERS)

    @app.post(TOKEN_PATH)
    async def first_token(request: Request) -> JSONResponse:
        data = await read_json(request)
        if data is None:
            return error(400, "invalid_request", "expected a JSON object")
        try:
            token = await run_in_threadpool(
                ctx.enrolment.issue_first_token, data.get("device_id"), data.get("secret")
            )
        except EnrolmentRejected as exc:
            log.warning("first token refused: %s", exc.reason)
            return error(400, exc.public, "the device credential was not accepted")
        return JSONResponse(
            {
                "first_token": token.token,
                "token_type": "Bearer",
                "expires_in": token.expires_in,
                "challenge": token.challenge,
                "keys_endpoint": ctx.settings.issuer + KEYS_PATH,
            },
            headers=SECURITY_HEADERS,
        )

    @app.post(KEYS_PATH)
    async def exchange_keys(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return error(401, "invalid_token", "a first token is required")
        data = await read_json(request)
        if data is None:
            return error(400, "invalid_request", "expected a JSON object")
        try:
            result = await run_in_threadpool(ctx.enrolment.exchange_keys, token.strip(), data)
        except EnrolmentRejected as exc:
            log.warning("key exchange refused: %s", exc.reason)
            status = 401 if exc.public == "invalid_token" else 400
            return error(status, exc.public, _DESCRIPTIONS.get(exc.public, ""))
        return JSONResponse(result, headers=SECURITY_HEADERS)

    add_message_route(app, ctx)
    add_crl_route(app, ctx)
    add_se_routes(app, ctx)
    add_login_routes(app, ctx)
    add_oauth_routes(app, ctx, ctx.login.client_auth)
    return RequestLog(StrictTransportSecurity(app), listener="https")  # type: ignore[return-value]


_DESCRIPTIONS = {
    "invalid_token": "the first token is invalid, expired or already used",
    "invalid_proof": "the keys were sent without a valid proof of possession",
    "invalid_request": "the key exchange request is malformed",
}
