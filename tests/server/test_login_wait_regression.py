"""Found while attacking /oauth/device/wait: ``timeout=nan`` passed ``min``/``max``
unclamped, and the long poll then re-read the store in a loop for as long as the
client held the request (over 40 s in the reproduction). Non-finite timeouts are
now an ``invalid_request``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from hatchway.config import Settings
from hatchway.server.context import ServerContext
from hatchway.server.https_app import build_https_app


@pytest.mark.parametrize("timeout", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_non_finite_wait_timeout_is_refused_at_once(tmp_path: Path, timeout: str) -> None:
    ctx = ServerContext.create(Settings(data_dir=tmp_path / "data", login_scram_iterations=4096))
    app = build_https_app(ctx)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=ctx.settings.issuer) as c:
            start = await c.post(
                "/oauth/device_authorization",
                data={"client_id": "hatchway-cli", "login_hint": "alice"},
            )
            form = {
                "device_code": start.json()["device_code"],
                "client_id": "hatchway-cli",
                "timeout": timeout,
            }
            # Bounded, so the old code fails here instead of hanging the suite.
            return await asyncio.wait_for(c.post("/oauth/device/wait", data=form), 5)

    try:
        response = asyncio.run(go())
    finally:
        ctx.close()
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
