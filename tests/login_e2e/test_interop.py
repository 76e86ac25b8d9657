"""Interop: OAuth 2.0 client libraries not written here complete the device flow.

authlib (httpx) and requests-oauthlib (oauthlib's ``DeviceClient``) discover the
endpoints from the RFC 8414 metadata, start the RFC 8628 flow (oauthlib's
``DeviceClient.prepare_request_uri`` builds the device authorization request;
authlib's ``OAuth2Session`` posts it), poll the token endpoint through
``authorization_pending`` and refresh. The phone is hatchway's
phone-side client, except in the issue 8 done-criterion test at the end,
where it is real Chromium.

Each client is registered with ``hatchway clients add`` first, and keeps the
default anti-phishing mode (confirm-code): none of these libraries knows
anything beyond RFC 8628.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatchway.login.phone import PhoneClient
from hatchway.server.process import ServerProcess
from tests.login_e2e.conftest import PASSWORD, add_client, add_user, start_server

pytestmark = pytest.mark.e2e

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _approve(server: ServerProcess, uri: str) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=context) as http:
        phone = PhoneClient(http)
        assert phone.approve(phone.open(uri), PASSWORD, origin=server.https_url).status == (
            "approved"
        )


def test_authlib_device_flow(server: ServerProcess) -> None:
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.requests_client import OAuth2Session

    add_user(server, "judy")
    add_client(server, "authlib-tv")
    ca = str(server.ca_file)
    with OAuth2Session(client_id="authlib-tv", token_endpoint_auth_method="none") as client:
        meta = client.get(
            server.https_url + "/.well-known/oauth-authorization-server",
            withhold_token=True,
            verify=ca,
        ).json()
        started = client.post(
            meta["device_authorization_endpoint"],
            data={"client_id": "authlib-tv", "login_hint": "judy"},
            withhold_token=True,
            verify=ca,
        ).json()
        with pytest.raises(OAuthError) as pending:
            client.fetch_token(
                meta["token_endpoint"],
                grant_type=DEVICE_GRANT,
                device_code=started["device_code"],
                verify=ca,
            )
        assert pending.value.error == "authorization_pending"
        _approve(server, started["verification_uri_complete"])
        time.sleep(started["interval"])  # RFC 8628 §3.5: respect the interval
        token: dict[str, Any] = client.fetch_token(
            meta["token_endpoint"],
            grant_type=DEVICE_GRANT,
            device_code=started["device_code"],
            verify=ca,
        )
        assert token["token_type"].lower() == "bearer"
        who = client.get(meta["hatchway_userinfo_endpoint"], verify=ca).json()
        assert who["username"] == "judy"
        refreshed = client.refresh_token(meta["token_endpoint"], verify=ca)
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert client.get(meta["hatchway_userinfo_endpoint"], verify=ca).status_code == 200


def test_requests_oauthlib_device_flow(server: ServerProcess) -> None:
    import requests
    from oauthlib.oauth2 import DeviceClient
    from requests_oauthlib import OAuth2Session

    add_user(server, "kate")
    add_client(server, "rol-tv", "--scope", "profile")
    ca = str(server.ca_file)
    device = DeviceClient(client_id="rol-tv")
    session = OAuth2Session(client=device)
    meta = session.get(server.https_url + "/.well-known/oauth-authorization-server", verify=ca)
    endpoints = meta.json()
    # oauthlib's DeviceClient builds the RFC 8628 §3.1 request (client_id,
    # scope and extra parameters); RFC 8628 wants them form-encoded in a POST.
    request_uri = device.prepare_request_uri(
        endpoints["device_authorization_endpoint"], scope=["profile"], login_hint="kate"
    )
    endpoint, _, body = request_uri.partition("?")
    assert endpoint == endpoints["device_authorization_endpoint"]
    started = session.post(
        endpoint,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        verify=ca,
    ).json()
    _approve(server, started["verification_uri_complete"])
    token = session.fetch_token(
        endpoints["token_endpoint"],
        device_code=started["device_code"],
        include_client_id=True,
        verify=ca,
    )
    assert token["access_token"]
    who = session.get(endpoints["hatchway_userinfo_endpoint"], verify=ca)
    assert who.json()["username"] == "kate"
    assert isinstance(who, requests.Response)
    session.close()


@pytest.mark.chromium
def test_done_criterion_unmodified_client_default_anti_phishing_chromium_phone(
    tmp_path: Path, page: Any
) -> None:
    """Issue 8 "Done when": an unmodified RFC 8628 client library (authlib, with
    its defaults) completes the flow against a fresh ``hatchway serve`` with only
    ``hatchway clients add`` beforehand, the default anti-phishing on, and the
    phone driven by real Chromium by the QR link."""
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.requests_client import OAuth2Session

    server = start_server(tmp_path)
    try:
        added = add_client(server, "living-room-tv", "--name", "Living-room TV app")
        assert added["anti_phishing"] == "confirm-code"  # the default, untouched
        add_user(server, "uma")
        ca = str(server.ca_file)
        # authlib's defaults: without a secret it picks the "none" method and
        # names itself with client_id in the form body (RFC 6749 §2.3).
        with OAuth2Session(client_id="living-room-tv") as device:
            meta = device.get(
                server.https_url + "/.well-known/oauth-authorization-server",
                withhold_token=True,
                verify=ca,
            ).json()
            started = device.post(
                meta["device_authorization_endpoint"],
                data={"client_id": "living-room-tv", "login_hint": "uma"},
                withhold_token=True,
                verify=ca,
            ).json()
            # The TV shows user_code; the person scans the QR code with the phone.
            page.goto(started["verification_uri_complete"])
            assert page.inner_text("#client-name") == "Living-room TV app"
            page.click(f'#confirm button[data-code="{started["user_code"]}"]')
            page.fill("#password", PASSWORD)
            page.click("#approve-button")
            page.wait_for_function(
                "() => document.getElementById('result').dataset.status === 'approved'",
                timeout=20_000,
            )
            interval = started["interval"]
            deadline = time.monotonic() + 60
            token: dict[str, Any] = {}
            while not token:
                assert time.monotonic() < deadline
                try:
                    token = device.fetch_token(
                        meta["token_endpoint"],
                        grant_type=DEVICE_GRANT,
                        device_code=started["device_code"],
                        verify=ca,
                    )
                except OAuthError as exc:  # RFC 8628 §3.5
                    assert exc.error in ("authorization_pending", "slow_down"), exc.error
                    interval += 5 if exc.error == "slow_down" else 0
                    time.sleep(interval)
            who = device.get(meta["hatchway_userinfo_endpoint"], verify=ca).json()
            assert who["username"] == "uma" and who["client_id"] == "living-room-tv"
    finally:
        server.stop()
