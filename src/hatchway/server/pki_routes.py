"""``GET /pki/crl``: the dev CA's newest CRL, DER (RFC 5280 §5; ``application/pkix-crl``).

Served on both listeners. A CRL is signed, so it needs no TLS (RFC 5280 §4.2.1.13
expects an http URI, which is what certificates and the metadata name); the HTTPS
listener serves the same bytes for clients that only talk to it.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hatchway.flows.deregistration import RevocationService
from hatchway.pki import CRL_MEDIA_TYPE, CRL_PATH
from hatchway.server.context import ServerContext

#: Relying parties may cache the CRL this long; a revocation shows within it.
CRL_MAX_AGE = 60


def add_crl_route(app: FastAPI, ctx: ServerContext) -> None:
    service = RevocationService(store=ctx.store, ca=ctx.identity.ca, clock=ctx.messages.clock)

    @app.get(CRL_PATH)
    async def crl() -> Response:
        # May re-sign (a store write) when the newest CRL is half-way to nextUpdate.
        record = await run_in_threadpool(service.current_crl)
        return Response(
            record.der,
            media_type=CRL_MEDIA_TYPE,
            headers={"Cache-Control": f"max-age={CRL_MAX_AGE}"},
        )
