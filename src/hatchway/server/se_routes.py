"""The secure-element web app and its JSON API (US 10,812,467 B2 claim 1, steps 1-2, 5).

Thin adapter over ``flows.sechannel.SecureChannelService``:

* ``GET /se/`` and ``/se/app.js``, ``/se/app.css``: the web app, plain files with no
  build step, under a strict CSP that allows scripts from this origin only and
  WebSockets to the loopback bridge only;
* ``GET /se/api/certificate``: the application certificate (PEM) and its origin;
* ``POST /se/api/start`` → ``{session, apdus, next}``;
* ``POST /se/api/handshake`` and ``/se/api/job`` with ``{session, responses}`` →
  the next ``{session, apdus, next}``, or ``{done: true, ...}`` at the end.

APDUs travel as lowercase hex. Failures are ``{error, error_description}`` with the
card's status word as ``sw`` when the card refused; the server logs the details.

The POST routes answer only ``Content-Type: application/json`` requests whose
``Origin`` header is this server's own origin (Fetch §3.1: browsers send it on every
POST). A cross-site form can send neither, so another site cannot make visitors'
browsers open sessions; ``start`` is also rationed per client address by the
service. (A non-browser client can forge both headers; that is what the rationing
is for. The origin check is CSRF defence, not the anti-phishing check — the card
does that.)
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hatchway.flows.sechannel import Done, SessionRefused, Stage, Step
from hatchway.se.appcert import serialize_origin
from hatchway.server.context import ServerContext

log = logging.getLogger("hatchway.sechannel")

API = "/se/api"
MAX_RESPONSES = 64
CSP = "default-src 'self'; connect-src 'self' ws://127.0.0.1:*; frame-ancestors 'none'"
_STATIC = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _static(name: str) -> bytes:
    return resources.files("hatchway.server").joinpath("static", "se", name).read_bytes()


def _step_body(step: Step) -> dict[str, Any]:
    return {
        "session": step.session,
        "apdus": [a.hex() for a in step.apdus],
        "next": f"{API}/{step.stage.value}",
    }


def _done_body(done: Done) -> dict[str, Any]:
    return {
        "done": True,
        "ok": True,
        "card": done.card_serial,
        "secret_bytes": done.secret_length,
        "round_trips": done.round_trips,
        "apdus": done.apdus,
    }


def _refused(exc: SessionRefused, headers: dict[str, str]) -> JSONResponse:
    body = {"error": exc.code, "error_description": str(exc)}
    if exc.sw is not None:
        body["sw"] = f"{exc.sw:04X}"
    if exc.retry_after is not None:
        headers = {**headers, "Retry-After": str(exc.retry_after)}
    return JSONResponse(body, status_code=int(exc.status_hint), headers=headers)


def same_origin_json(request: Request, origin: str) -> str | None:
    """Why a POST is refused (``None``: it is a same-origin JSON request)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return "expected Content-Type: application/json"
    values = request.headers.getlist("origin")
    try:
        if len(values) != 1 or serialize_origin(values[0]) != origin:
            return "cross-origin request"
    except ValueError:
        return "cross-origin request"
    return None


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _responses(data: dict[str, Any]) -> tuple[str, list[bytes]] | None:
    session, raw = data.get("session"), data.get("responses")
    if not isinstance(session, str) or not isinstance(raw, list) or len(raw) > MAX_RESPONSES:
        return None
    try:
        parsed = [bytes.fromhex(r) for r in raw if isinstance(r, str)]
    except ValueError:
        return None
    return (session, parsed) if len(parsed) == len(raw) else None


def add_se_routes(app: FastAPI, ctx: ServerContext) -> None:
    # Imported here: https_app imports this module to mount the routes.
    from hatchway.server.https_app import SECURITY_HEADERS, error, read_json

    service = getattr(ctx, "sechannel", None)
    page_headers = {**SECURITY_HEADERS, **PAGE_HEADERS}

    for path, (name, media) in _STATIC.items():

        def page(name: str = name, media: str = media) -> Response:
            return Response(_static(name), media_type=media, headers=page_headers)

        app.add_api_route(f"/se/{path}", page, methods=["GET"], include_in_schema=False)

    if service is None:
        return

    @app.get(f"{API}/certificate")
    async def certificate() -> JSONResponse:
        ident = service.identity
        return JSONResponse({"origin": ident.origin, "certificate": ident.certificate_pem},
                            headers=SECURITY_HEADERS)

    def refused_request(request: Request) -> JSONResponse | None:
        why = same_origin_json(request, service.identity.origin)
        if why is None:
            return None
        log.warning("SE API request refused: %s", why, extra={"client": _client(request)})
        return error(403 if why.startswith("cross") else 415, "invalid_request", why)

    @app.post(f"{API}/start")
    async def start(request: Request) -> JSONResponse:
        if (bad := refused_request(request)) is not None:
            return bad
        try:
            step = await run_in_threadpool(service.start, _client(request))
        except SessionRefused as exc:
            return _refused(exc, SECURITY_HEADERS)
        body = _step_body(step)
        body["certificate"] = service.identity.certificate_pem
        return JSONResponse(body, headers=SECURITY_HEADERS)

    async def advance(request: Request, stage: Stage) -> JSONResponse:
        if (bad := refused_request(request)) is not None:
            return bad
        data = await read_json(request)
        parsed = None if data is None else _responses(data)
        if parsed is None:
            return error(400, "invalid_request", "expected {session, responses: [hex]}")
        try:
            result = await run_in_threadpool(service.advance, parsed[0], stage, parsed[1])
        except SessionRefused as exc:
            log.warning("SE session step refused: %s", exc, extra={"stage": stage.value})
            return _refused(exc, SECURITY_HEADERS)
        body = _done_body(result) if isinstance(result, Done) else _step_body(result)
        return JSONResponse(body, headers=SECURITY_HEADERS)

    @app.post(f"{API}/handshake")
    async def handshake(request: Request) -> JSONResponse:
        return await advance(request, Stage.HANDSHAKE)

    @app.post(f"{API}/job")
    async def job(request: Request) -> JSONResponse:
        return await advance(request, Stage.JOB)
