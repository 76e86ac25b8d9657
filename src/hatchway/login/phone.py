"""The phone side of the cross-device login, in Python (US 9,635,022 B2 steps 3–5).

Does what the approval page and ``static/scram.js`` do in a browser: open
``verification_uri_complete``, read the session reference and CSRF token from
the page's data attributes, and prove the password with SCRAM-SHA-256 bound to
that session (:class:`hatchway.login.scram.ScramClient`). The password never
leaves this object. Used by ``hatchway demo``, the interop tests and benchmarks.

Like a person, it reaches the page either by the link (:meth:`PhoneClient.open`,
the QR code) or by typing the code (:meth:`PhoneClient.open_typed`). For a
confirm-code client reached by the link, :meth:`PhoneClient.approve` picks the
code the person reads on the device (``shown_code``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from typing import Any

import httpx

from hatchway.errors import HatchwayError
from hatchway.login.scram import ScramClient
from hatchway.runtime import Random, system_random

_ATTR = re.compile(r'data-(session-ref|user-code|csrf|typed|confirm)="([^"]*)"')
_CHOICE = re.compile(r'<button type=button class=code data-code="([^"]*)">')
_ENTRY_CSRF = re.compile(r'<input type=hidden name=csrf value="([^"]*)">')
_CLIENT = re.compile(r"<bdi id=client-name>(.*?)</bdi>")
_STATUS = re.compile(r"data-status=([a-z]+)")
_TAG = re.compile(r"<[^>]*>")


class ApprovalFailed(HatchwayError):
    """The server did not accept the approval; ``error`` is its error code."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """What the approval page showed and carries for the proof."""

    session_ref: str
    user_code: str
    csrf: str
    text: str
    choices: tuple[str, ...] = ()
    """Codes offered for confirm-code; empty when no pick is asked for."""
    typed: str = ""
    """The page's proof that the code was typed (sent back with the proof)."""
    client_name: str = ""


@dataclass(frozen=True, slots=True)
class Approval:
    status: str
    match_number: str | None


class PhoneClient:
    """A phone that approves or denies login requests."""

    def __init__(self, http: httpx.Client, *, random: Random = system_random) -> None:
        self.http = http
        self.random = random

    def open(self, verification_uri_complete: str) -> PendingRequest:
        """Load the approval page; raise :class:`ApprovalFailed` if it shows no request."""
        return self._parse(self.http.get(verification_uri_complete))

    def open_typed(self, verification_uri: str, user_code: str) -> PendingRequest:
        """Type ``user_code`` into the code entry page at ``verification_uri``."""
        entry = self.http.get(verification_uri)
        token = _ENTRY_CSRF.search(entry.text)
        if entry.status_code != 200 or token is None:
            raise ApprovalFailed("unknown", status=entry.status_code)
        return self._parse(
            self.http.post(
                verification_uri, data={"user_code": user_code, "csrf": unescape(token.group(1))}
            )
        )

    def _parse(self, r: httpx.Response) -> PendingRequest:
        attrs = dict(_ATTR.findall(r.text))
        if r.status_code != 200 or "session-ref" not in attrs:
            status = _STATUS.search(r.text)
            raise ApprovalFailed(status.group(1) if status else "unknown", status=r.status_code)
        text = re.search(r"<p id=origin>(.*?)</p>", r.text)
        return PendingRequest(
            session_ref=unescape(attrs["session-ref"]),
            user_code=unescape(attrs["user-code"]),
            csrf=unescape(attrs["csrf"]),
            text=unescape(_TAG.sub("", text.group(1))) if text else "",
            choices=tuple(unescape(c) for c in _CHOICE.findall(r.text))
            if attrs.get("confirm") == "1"
            else (),
            typed=unescape(attrs.get("typed", "")),
            client_name=unescape(m.group(1)) if (m := _CLIENT.search(r.text)) else "",
        )

    def _post(self, request: PendingRequest, url: str, body: dict[str, str]) -> dict[str, Any]:
        r = self.http.post(url, json=body, headers={"x-csrf-token": request.csrf})
        data: dict[str, Any] = r.json()
        if r.status_code != 200:
            raise ApprovalFailed(
                data.get("error", "server_error"), data.get("error_description", ""), r.status_code
            )
        return data

    def approve(
        self,
        request: PendingRequest,
        password: str,
        *,
        origin: str,
        shown_code: str | None = None,
    ) -> Approval:
        """Prove ``password`` for this session; returns the decision and match number.

        ``shown_code``: the code the person reads on the device, picked when the
        page asks (confirm-code by link). By default the person is looking at
        the device that started this request, so it is the request's own code.
        """
        client = ScramClient(request.session_ref, password, random=self.random)
        body = {"user_code": request.user_code, "client_first": client.first()}
        if request.typed:
            body["typed"] = request.typed
        if request.choices:
            body["confirm_code"] = request.user_code if shown_code is None else shown_code
        start = self._post(request, origin + "/login/scram/start", body)
        final = client.final(start["server_first"])
        finish = self._post(
            request,
            origin + "/login/scram/finish",
            {"exchange": start["exchange"], "client_final": final},
        )
        client.verify(finish["server_final"])  # the server really holds the verifier
        return Approval(status=finish["status"], match_number=finish.get("match_number"))

    def deny(self, request: PendingRequest, *, origin: str) -> str:
        r = self.http.post(
            origin + "/login/deny",
            data={
                "user_code": request.user_code,
                "session_ref": request.session_ref,
                "csrf": request.csrf,
            },
        )
        status = _STATUS.search(r.text)
        return status.group(1) if status else "unknown"
