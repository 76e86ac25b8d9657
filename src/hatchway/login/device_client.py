"""The device side of the cross-device login, as ``hatchway login`` uses it.

US 9,635,022 B2 claim steps 1, 2 and 6 over RFC 8628: discover the endpoints
from the RFC 8414 metadata, send the username (``login_hint``) and never a
password, wait for the decision by push (hatchway's long-poll endpoint; the
RFC 8628 §3.4 token endpoint polling at ``interval`` is the fallback), then
collect the tokens, answering number matching when the server asks for it.

One narrow injected piece of I/O: an ``httpx.Client`` (STYLE.md §9), so tests
can hand in a client with their own CA or transport.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hatchway.errors import HatchwayError
from hatchway.login.authorization import DeviceAuthorization
from hatchway.pki.files import write_private

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_CLIENT_ID = "hatchway-cli"
_PUSH_WAIT = 25.0


class LoginFailed(HatchwayError):
    """The login ended without tokens; ``error`` is the RFC 8628 §3.5 code."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float
    server: str
    client_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "server": self.server,
            "client_id": self.client_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokens:
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            expires_at=float(data["expires_at"]),
            server=str(data["server"]),
            client_id=str(data["client_id"]),
        )

    def save(self, path: Path) -> None:
        """Write the tokens to ``path``, readable by the owner only (0600, atomic)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, json.dumps(self.to_json(), sort_keys=True).encode())

    @classmethod
    def load(cls, path: Path) -> Tokens:
        return cls.from_json(json.loads(path.read_text()))


class DeviceLoginClient:
    """Talks to one hatchway server as a device that wants a session."""

    def __init__(
        self,
        server: str,
        *,
        http: httpx.Client,
        client_id: str = DEFAULT_CLIENT_ID,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.http = http
        self.client_id = client_id
        self.clock = clock
        self.sleep = sleep
        self._meta: dict[str, Any] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata, fetched once."""
        if self._meta is None:
            r = self.http.get(self.server + "/.well-known/oauth-authorization-server")
            r.raise_for_status()
            self._meta = r.json()
        return self._meta

    def _post(self, endpoint: str, data: dict[str, str], timeout: float = 30.0) -> httpx.Response:
        return self.http.post(self.metadata[endpoint], data=data, timeout=timeout)

    def start(self, username: str, *, device_name: str, scope: str = "") -> DeviceAuthorization:
        """Claim steps 1–2: send the username only, get the session's codes."""
        r = self._post(
            "device_authorization_endpoint",
            {
                "client_id": self.client_id,
                "login_hint": username,
                "scope": scope,
                "device_name": device_name,
            },
        )
        body = r.json()
        if r.status_code != 200:
            raise LoginFailed(body.get("error", "server_error"), body.get("error_description", ""))
        return DeviceAuthorization.from_json(body)

    def wait(self, started: DeviceAuthorization, *, timeout: float = _PUSH_WAIT) -> dict[str, Any]:
        """Push: block until the phone decides (or ``timeout``); returns the state."""
        r = self._post(
            "hatchway_device_wait_endpoint",
            {
                "client_id": self.client_id,
                "device_code": started.device_code,
                "timeout": str(timeout),
            },
            timeout=timeout + 10,
        )
        body: dict[str, Any] = r.json()
        if r.status_code != 200:
            raise LoginFailed(body.get("error", "server_error"), body.get("error_description", ""))
        return body

    def request_token(
        self, started: DeviceAuthorization, *, match_number: str | None = None
    ) -> tuple[Tokens | None, dict[str, Any]]:
        """One RFC 8628 §3.4 token request: tokens, or None and the error body."""
        data = {
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": started.device_code,
            "client_id": self.client_id,
        }
        if match_number is not None:
            data["match_number"] = match_number
        r = self._post("token_endpoint", data)
        body: dict[str, Any] = r.json()
        if r.status_code == 200:
            return self._tokens(body), body
        return None, body

    def _tokens(self, body: dict[str, Any]) -> Tokens:
        return Tokens(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_at=self.clock() + float(body["expires_in"]),
            server=self.server,
            client_id=self.client_id,
        )

    def complete(
        self,
        started: DeviceAuthorization,
        *,
        push: bool = True,
        ask_match_number: Callable[[int | None], str] | None = None,
        on_poll: Callable[[str], None] | None = None,
    ) -> Tokens:
        """Wait for the decision and collect the tokens, or raise :class:`LoginFailed`.

        With ``push`` the device sleeps on the wait endpoint; without it, it polls
        the token endpoint at ``interval``, honouring ``slow_down`` (§3.5).
        """
        interval = float(started.interval)
        deadline = self.clock() + started.expires_in + 5
        match: str | None = None
        while True:
            if push:
                state = self.wait(started)
                if state["state"] == "pending" and self.clock() < deadline:
                    continue
            tokens, body = self.request_token(started, match_number=match)
            if tokens is not None:
                return tokens
            error = str(body.get("error", "server_error"))
            description = str(body.get("error_description", ""))
            if on_poll is not None:
                on_poll(error)
            if error == "authorization_pending" and description.startswith(
                ("awaiting_match_number", "match_number_mismatch")
            ):
                if ask_match_number is None:
                    raise LoginFailed("match_number_required", "the server asks for the number")
                left = None
                if "attempts_left=" in description:
                    left = int(description.rsplit("=", 1)[1])
                match = ask_match_number(left)
                continue
            if error == "slow_down":
                interval = float(body.get("interval", interval + 5))
            elif error != "authorization_pending":
                raise LoginFailed(error, description)
            if not push:
                self.sleep(interval)

    def refresh(self, tokens: Tokens) -> Tokens:
        r = self._post(
            "token_endpoint",
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens.refresh_token,
                "client_id": tokens.client_id,
            },
        )
        body = r.json()
        if r.status_code != 200:
            raise LoginFailed(body.get("error", "server_error"), body.get("error_description", ""))
        return self._tokens(body)

    def revoke(self, tokens: Tokens) -> None:
        """Sign this device out: RFC 7009 revocation of its refresh token, which
        ends its whole session (every access token of it too, for services that
        ask the server). Raises :class:`LoginFailed` if the server refused."""
        r = self._post(
            "revocation_endpoint",
            {
                "token": tokens.refresh_token,
                "token_type_hint": "refresh_token",
                "client_id": tokens.client_id,
            },
        )
        if r.status_code != 200:
            try:
                body = r.json()
            except ValueError:
                body = {}
            raise LoginFailed(body.get("error", f"http_{r.status_code}"), "revocation refused")

    def whoami(self, tokens: Tokens) -> tuple[int, dict[str, Any]]:
        """Call the protected endpoint; returns the HTTP status and the JSON body."""
        r = self.http.get(
            self.metadata["hatchway_userinfo_endpoint"],
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )
        return r.status_code, r.json()
