"""HTTPS routes for services that check and revoke tokens (issue 8 §3).

Thin adapter over :mod:`hatchway.flows.oauth`:

* ``POST /oauth/revoke`` — RFC 7009. Any registered client, public ones by
  ``client_id`` alone (§2.1); 200 with an empty body whether or not anything
  was revoked (§2.2).
* ``POST /oauth/introspect`` — RFC 7662. Confidential clients only (resource
  servers); ``{"active": false}`` for anything not active.

Client authentication failures are ``401 invalid_client`` with a ``Basic``
challenge (RFC 6749 §5.2; RFC 9110 §15.5.2 wants a challenge on every 401).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hatchway.flows.login.common import LoginRefused
from hatchway.flows.oauth.client_auth import AuthenticatedClient, ClientAuthenticator
from hatchway.flows.oauth.introspection import INTROSPECTION_PATH, TokenIntrospection
from hatchway.flows.oauth.revocation import REVOCATION_PATH, TokenRevocation
from hatchway.server.context import ServerContext
from hatchway.server.login_routes import SECURITY_HEADERS, _form, _ip, _refused, _ua


def _token(form: dict[str, str]) -> tuple[str, str | None]:
    token = form.get("token", "")
    if not token:
        raise LoginRefused("invalid_request", "missing token")
    return token, form.get("token_type_hint") or None


def add_oauth_routes(app: FastAPI, ctx: ServerContext, clients: ClientAuthenticator) -> None:
    """Mount the revocation and introspection endpoints on the HTTPS app."""
    revocation = TokenRevocation(ctx.login)
    introspection = TokenIntrospection(ctx.login)

    async def authenticated(
        request: Request, form: dict[str, str], *, allow_public: bool
    ) -> AuthenticatedClient:
        return await run_in_threadpool(
            clients.authenticate,
            request.headers.get("authorization"),
            form,
            allow_public=allow_public,
        )

    @app.post(REVOCATION_PATH)
    async def revoke(request: Request) -> Response:
        try:
            form = await _form(request)
            client = await authenticated(request, form, allow_public=True)
            token, hint = _token(form)
            await run_in_threadpool(
                revocation.revoke, client, token, hint, ip=_ip(request), user_agent=_ua(request)
            )
        except LoginRefused as exc:
            return _refused(exc)
        return Response(status_code=200, headers=SECURITY_HEADERS)

    @app.post(INTROSPECTION_PATH)
    async def introspect(request: Request) -> JSONResponse:
        try:
            form = await _form(request)
            client = await authenticated(request, form, allow_public=False)
            token, hint = _token(form)
            body = await run_in_threadpool(introspection.introspect, client, token, hint)
        except LoginRefused as exc:
            return _refused(exc)
        return JSONResponse(body, headers=SECURITY_HEADERS)
