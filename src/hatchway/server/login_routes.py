"""HTTPS routes of the cross-device login (RFC 8628 and the phone's approval page).

Thin adapter over :mod:`hatchway.flows.login` (device side) and
:mod:`hatchway.flows.login.approval` (phone side): parse, call in a worker
thread, map :class:`LoginRefused` to RFC 6749 §5.2 / RFC 8628 §3.5 JSON.

* ``POST /oauth/device_authorization`` — RFC 8628 §3.1 (form-encoded).
* ``POST /oauth/token`` — §3.4 device_code grant, RFC 6749 §6 refresh. A poll
  of a pending session that memory can answer (``flows/login/polls.py``) is
  answered on the event loop, with no worker thread and no store; the first
  token request starts the bus feed that makes those answers safe.
* ``POST /oauth/device/wait`` — push as a long poll: answers the moment the
  bus announces a decision for the session, from whichever replica made it.
* ``GET /login`` — ``verification_uri`` (code entry) and
  ``verification_uri_complete`` (the approval page; a confirm-code client's
  user must pick the device's code there). ``POST /login`` — the code entry
  form: a code typed on our own page (CSRF-bound) needs no pick, and the page
  carries an HMAC proof of that to ``scram/start``.
* ``POST /login/scram/start|finish`` (JSON), ``POST /login/deny`` (form),
  CSRF-protected: a ``__Host-`` cookie plus an HMAC of it in the page, and a
  same-origin check on ``Origin`` when the browser sends one. Every endpoint
  that takes a user code spends the per-IP budget before looking it up.
* The client IP is the TCP peer as uvicorn reports it; uvicorn rewrites it from
  ``X-Forwarded-For`` only for ``HATCHWAY_TRUSTED_PROXIES`` (``server/run.py``).
* ``GET /login/static/*`` — page assets with a JavaScript MIME type for ``.js``.
* ``GET /api/whoami`` — the protected endpoint; Bearer access token (RFC 6750).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hatchway import strictjson
from hatchway.errors import InvalidMessage
from hatchway.flows.login.approval import ApprovalService
from hatchway.flows.login.common import LoginRefused, login_channel, server_secret
from hatchway.flows.login.polls import start_decision_feed
from hatchway.flows.login.service import (
    DEVICE_AUTHORIZATION_PATH,
    TOKEN_PATH,
    VERIFICATION_PATH,
    WAIT_PATH,
    WHOAMI_PATH,
    DeviceView,
)
from hatchway.login import STATIC_DIR, SessionState
from hatchway.server.context import ServerContext
from hatchway.server.edge import HTTPS_SHAPE
from hatchway.server.login_pages import (
    PAGE_HEADERS,
    STATIC_PREFIX,
    approval_page,
    approved_page,
    code_entry_page,
    ended_page,
)

log = logging.getLogger("hatchway.login")

MAX_FORM_BODY = 8 * 1024
# Same as https_app's (not imported from there: that module mounts this one).
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
MAX_WAIT = 30.0
CSRF_COOKIE = "__Host-hw_csrf"
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in _STATIC_TYPES}


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _ua(request: Request) -> str:
    return request.headers.get("user-agent", "")[:256]


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BODY:
            raise LoginRefused("invalid_request", "request too large")
    return body


async def _form(request: Request) -> dict[str, str]:
    body = await _body(request)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise LoginRefused("invalid_request", "malformed form body") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:  # RFC 6749 §3.2: parameters must not be repeated
            raise LoginRefused("invalid_request", f"repeated parameter {key}")
        form[key] = value
    return form


def _refused(exc: LoginRefused) -> JSONResponse:
    if exc.reason != exc.error:
        log.info("login request refused: %s", exc.reason)
    headers = dict(SECURITY_HEADERS)
    if exc.retry_after:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_hint == 401:
        headers["WWW-Authenticate"] = exc.challenge or f'Bearer error="{exc.error}"'
    return JSONResponse(exc.body(), status_code=exc.status_hint, headers=headers)


class _Csrf:
    """Double-submit cookie whose page token is an HMAC of the cookie (OWASP)."""

    def __init__(self, key: bytes, origin: str, *, typed_key: bytes) -> None:
        self._key = key
        self._origin = origin
        # Its own key: a cookie value is the client's choice, so a CSRF token
        # (HMAC of the cookie) must never double as a typed-code proof.
        self._typed_key = typed_key

    def token_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), "sha256").hexdigest()

    def typed_token(self, cookie: str, user_code: str) -> str:
        """Proof, bound to this browser's cookie, that ``user_code`` was typed here."""
        message = f"{user_code}\x00{cookie}".encode("utf-8", "surrogatepass")
        return hmac.new(self._typed_key, message, "sha256").hexdigest()

    def typed(self, request: Request, user_code: str, token: str | None) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not token:
            return False
        expected = self.typed_token(cookie, user_code).encode()
        # Bytes, not str: compare_digest refuses non-ASCII text with a TypeError.
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected)

    def issue(self, request: Request) -> tuple[str, str]:
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        return cookie, self.token_for(cookie)

    def check(self, request: Request, token: str | None) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin != self._origin:
            raise LoginRefused("invalid_request", "cross-origin request refused", status=403)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        # Bytes: compare_digest raises TypeError (a 500) on a str with non-ASCII text,
        # and the token is whatever the client put in a form field or header.
        sent = (token or "").encode("utf-8", "replace")
        if not cookie or not sent or not hmac.compare_digest(sent, self.token_for(cookie).encode()):
            raise LoginRefused("invalid_request", "missing or wrong CSRF token", status=403)


def _page(html: str, cookie: str, status: int = 200) -> HTMLResponse:
    response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
    response.set_cookie(
        CSRF_COOKIE, cookie, secure=True, httponly=True, samesite="strict", path="/"
    )
    return response


def add_login_routes(app: FastAPI, ctx: ServerContext) -> None:
    """Mount the login endpoints on the HTTPS app."""
    login = ctx.login
    approval = ApprovalService(login)
    csrf = _Csrf(
        server_secret(ctx.identity, "csrf"),
        ctx.settings.issuer,
        typed_key=server_secret(ctx.identity, "typed user code"),
    )
    feed: list[asyncio.Task[None]] = []  # the decision feed, once started

    async def ensure_feed() -> None:
        # Lazily, because uvicorn runs with lifespan off. Until the feed runs,
        # polls still skip the store write but read the store every time.
        if feed and not feed[-1].done():
            return
        try:
            await ctx.bus.start()  # no-op after serve(); starts it for in-process apps
        except Exception:  # the store path still works without it
            log.warning("bus unavailable; pending polls read the store", exc_info=True)
            return
        if not feed or feed[-1].done():  # another request may have started it meanwhile
            feed[:] = [start_decision_feed(ctx.bus, login.pending)]

    @app.post(DEVICE_AUTHORIZATION_PATH)
    async def device_authorization(request: Request) -> JSONResponse:
        try:
            form = await _form(request)
            answer = await run_in_threadpool(
                login.start,
                form,
                ip=_ip(request),
                user_agent=_ua(request),
                authorization=request.headers.get("authorization"),
            )
        except LoginRefused as exc:
            return _refused(exc)
        return JSONResponse(answer.to_json(), headers=SECURITY_HEADERS)

    @app.post(TOKEN_PATH)
    async def token(request: Request) -> JSONResponse:
        try:
            form = await _form(request)
            authorization = request.headers.get("authorization")
            fast = None if authorization else await login.poll_fast(form)
            if fast is not None:
                return _refused(fast)
            await ensure_feed()
            body = await run_in_threadpool(
                login.token,
                form,
                ip=_ip(request),
                user_agent=_ua(request),
                authorization=authorization,
            )
        except LoginRefused as exc:
            return _refused(exc)
        return JSONResponse(body, headers={**SECURITY_HEADERS, "Pragma": "no-cache"})

    @app.post(WAIT_PATH)
    async def wait(request: Request) -> JSONResponse:
        try:
            form = await _form(request)
            timeout = _wait_timeout(form.get("timeout"))
            view = await run_in_threadpool(login.device_view, form)
            if view.state is SessionState.PENDING:
                await ctx.bus.start()  # no-op after serve(); starts it for in-process apps
                view = await _wait_for_decision(ctx, form, view, timeout)
        except LoginRefused as exc:
            return _refused(exc)
        return JSONResponse(view.to_json(), headers=SECURITY_HEADERS)

    @app.get(VERIFICATION_PATH)
    async def verification(request: Request, user_code: str = "") -> HTMLResponse:
        cookie, token = csrf.issue(request)
        if not user_code:
            return _page(code_entry_page(token), cookie)
        return await _approval_view(request, cookie, token, user_code, typed=False)

    @app.post(VERIFICATION_PATH)
    async def typed_code(request: Request) -> HTMLResponse:
        cookie, token = csrf.issue(request)
        try:
            form = await _form(request)
            csrf.check(request, form.get("csrf"))
        except LoginRefused:
            return _page(
                code_entry_page(token, message="Please enter the code again."), cookie, 403
            )
        user_code = form.get("user_code", "")
        if not user_code:
            return _page(code_entry_page(token), cookie)
        return await _approval_view(request, cookie, token, user_code, typed=True)

    async def _approval_view(
        request: Request, cookie: str, token: str, user_code: str, *, typed: bool
    ) -> HTMLResponse:
        view = await run_in_threadpool(approval.page, user_code, ip=_ip(request))
        if view.status == "pending" and view.session is not None:
            proof = csrf.typed_token(cookie, view.session.user_code) if typed else ""
            return _page(approval_page(view, token, typed_token=proof), cookie)
        if view.status == "approved":
            return _page(approved_page(view, token), cookie)
        status = 429 if view.status == "limited" else 200 if view.session else 404
        response = _page(ended_page(view.status), cookie, status)
        if view.status == "limited":  # RFC 6585 §4: say when to come back
            response.headers["Retry-After"] = str(view.retry_after or 60)
        return response

    @app.post("/login/scram/start")
    async def scram_start(request: Request) -> JSONResponse:
        try:
            csrf.check(request, request.headers.get("x-csrf-token"))
            data = await _json(request)
            user_code = _str(data, "user_code")
            picked = data.get("confirm_code")
            typed_proof = data.get("typed")
            server_first, exchange = await run_in_threadpool(
                approval.scram_start,
                user_code=user_code,
                client_first=_str(data, "client_first"),
                ip=_ip(request),
                typed=csrf.typed(
                    request, user_code, typed_proof if isinstance(typed_proof, str) else None
                ),
                picked=picked if isinstance(picked, str) and len(picked) <= 64 else None,
                user_agent=_ua(request),
                browser=request.cookies.get(CSRF_COOKIE, ""),
            )
        except LoginRefused as exc:
            return _refused(exc)
        return JSONResponse(
            {"server_first": server_first, "exchange": exchange}, headers=SECURITY_HEADERS
        )

    @app.post("/login/scram/finish")
    async def scram_finish(request: Request) -> JSONResponse:
        try:
            csrf.check(request, request.headers.get("x-csrf-token"))
            data = await _json(request)
            result = await run_in_threadpool(
                approval.scram_finish,
                exchange=_str(data, "exchange"),
                client_final=_str(data, "client_final"),
                ip=_ip(request),
                user_agent=_ua(request),
                browser=request.cookies.get(CSRF_COOKIE, ""),
            )
        except LoginRefused as exc:
            return _refused(exc)
        body: dict[str, Any] = {"status": result.status, "server_final": result.server_final}
        if result.match_number is not None:
            body["match_number"] = result.match_number
        return JSONResponse(body, headers=SECURITY_HEADERS)

    @app.post("/login/deny")
    async def deny(request: Request) -> Response:
        cookie, _ = csrf.issue(request)
        try:
            form = await _form(request)
            csrf.check(request, form.get("csrf"))
            if "password" in form or form.get("action", "deny") != "deny":
                # An Approve that reached us as a plain form (an old page, no
                # script): never treat it as a Deny, and never look at it.
                return _page(ended_page("needs_js"), cookie, 400)
            status = await run_in_threadpool(
                approval.deny,
                user_code=form.get("user_code", ""),
                ip=_ip(request),
                user_agent=_ua(request),
                session_ref=form.get("session_ref", ""),
            )
        except LoginRefused as exc:
            page = {403: "unknown", 404: "unknown", 429: "limited"}.get(exc.status_hint, "consumed")
            if exc.error == "too_late":
                page = "too_late"
            response = _page(ended_page(page), cookie, exc.status_hint)
            if exc.retry_after:
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        return _page(ended_page(status), cookie)

    @app.get(STATIC_PREFIX + "{name}")
    async def static(name: str) -> Response:
        path = _STATIC_FILES.get(name)
        if path is None:
            return HTTPS_SHAPE.response(404)
        return Response(
            path.read_bytes(),
            media_type=_STATIC_TYPES[path.suffix],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @app.get(WHOAMI_PATH)
    async def whoami(request: Request) -> JSONResponse:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not bearer:
                raise InvalidMessage("no bearer token")
            claims = await run_in_threadpool(login.verify_access_token, bearer.strip())
        except InvalidMessage as exc:
            log.info("access token refused: %s", exc.reason)
            return _refused(LoginRefused("invalid_token", "access token invalid", status=401))
        return JSONResponse(
            {
                "username": claims["sub"],
                "client_id": claims.get("client_id"),
                "scope": claims.get("scope", ""),
                "session": claims.get("sid"),
                "expires_at": claims["exp"],
            },
            headers=SECURITY_HEADERS,
        )

    @app.get("/login/", include_in_schema=False)
    async def login_slash() -> RedirectResponse:
        return RedirectResponse(VERIFICATION_PATH)


async def _wait_for_decision(
    ctx: ServerContext, form: dict[str, str], view: DeviceView, timeout: float
) -> DeviceView:
    """Sleep on the bus until the session leaves PENDING, it expires, or ``timeout``.

    Subscribe first, then re-read (bus/base.py's race-free pattern): a decision
    published in between is already queued for us. The bus only wakes us; the
    store says what happened, so a lost or duplicate wake-up costs no correctness.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, max(0.0, view.expires_at - ctx.login.clock()))
    with ctx.bus.subscribe(login_channel(view.reference)) as sub:
        view = await run_in_threadpool(ctx.login.device_view, form)
        while view.state is SessionState.PENDING:
            left = deadline - loop.time()
            if left <= 0:
                break
            await sub.get(left)
            view = await run_in_threadpool(ctx.login.device_view, form)
    return view


def _wait_timeout(raw: str | None) -> float:
    """Seconds to hold a push request: a finite, non-negative number, capped.

    ``float()`` also reads "nan", "inf" and "1e999"; NaN compares false with
    everything, so min/max clamping would let it through uncapped.
    """
    try:
        timeout = float(raw or 25)
    except ValueError:
        timeout = math.nan
    if not math.isfinite(timeout) or timeout < 0:
        raise LoginRefused("invalid_request", "malformed timeout")
    return min(timeout, MAX_WAIT)


MAX_JSON_DEPTH = 8
"""The phone's requests are flat objects of strings; anything deeper is refused."""


def _json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects, outside strings (bytes, not parsed)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def _json(request: Request) -> dict[str, Any]:
    body = await _body(request)
    # The project's strict reader (I-JSON: no lone surrogates, NaN or duplicate
    # names), depth-bounded before anything recurses.
    try:
        return strictjson.loads_object(body, max_depth=MAX_JSON_DEPTH)
    except strictjson.JsonError:
        raise LoginRefused("invalid_request", "expected a JSON object") from None


def _str(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise LoginRefused("invalid_request", f"missing or malformed {name}")
    return value
