"""Cross-device login, phone side: US 9,635,022 B2 claim steps 3–5.

The phone reaches the session by its user code (step 3: the QR code carries
``verification_uri_complete``, or the code is typed). The page asks for the
password only (step 4) and proves it with SCRAM-SHA-256 bound to the session
(step 5, RFC 5802/7677, see :mod:`hatchway.login.scram`). This module:

* looks sessions up by user code under per-IP and per-code rate limits
  (RFC 8628 §5.1) and renders nothing itself (``server/login_pages.py`` does);
* runs the SCRAM exchange *statelessly*: ``scram_start`` hands the page an
  HMAC-sealed exchange token holding the client-first message and the server
  nonce, and ``scram_finish`` rebuilds the exchange from it, so the two
  requests may land on different replicas;
* applies password back-off and lockout per account (decoy accounts behave
  the same, so answers are uniform), then approves through the one transition
  table, announces the result on the bus and writes the audit log.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass

from hatchway.errors import InvalidMessage, LocalProtocolError, RemoteProtocolError
from hatchway.flows.login import LoginService
from hatchway.flows.login_common import (
    LOCKOUT,
    DecoyAttempts,
    LoginRefused,
    b64url,
    server_secret,
    unb64url,
)
from hatchway.login import (
    KeyedLimiter,
    LoginSession,
    ScramServerExchange,
    ScramVerifier,
    SessionState,
    TokenBucket,
    approve,
    decoy_verifier,
    deny,
    expire_if_due,
    normalize_user_code,
)
from hatchway.store.login_errors import StaleSession
from hatchway.store.login_records import AuditEvent

EXCHANGE_TTL = 120.0
"""Seconds between server-first and client-final; PBKDF2 on a slow phone fits."""
_NONCE_BYTES = 18


@dataclass(frozen=True, slots=True)
class SessionPage:
    """What the approval page shows; ``session`` is None for an unknown code."""

    status: str  # "pending" | "approved" | "denied" | "expired" | "unknown" | "limited"
    session: LoginSession | None = None
    retry_after: int = 0


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    status: str  # "approved" | "denied" | "expired"
    server_final: str
    match_number: str | None


class ApprovalService:
    """The phone page's back end."""

    def __init__(self, login: LoginService) -> None:
        self.login = login
        self.store = login.store
        self.clock = login.clock
        self.random = login.random
        self._exchange_key = server_secret(login.identity, "scram exchange")
        self._decoy_key = server_secret(login.identity, "decoy verifier")
        # RFC 8628 §5.1: 34.6-bit codes stay out of reach when each address gets
        # ~10 lookups a minute and each code a handful of attempts.
        per_minute = login.settings.login_attempts_per_minute
        self.ip_limiter = KeyedLimiter(
            TokenBucket(capacity=2 * per_minute, refill_per_second=per_minute / 60)
        )
        self.code_limiter = KeyedLimiter(TokenBucket(capacity=10, refill_per_second=1 / 60))
        self.decoys = DecoyAttempts()

    # --- claim step 3: finding the session ------------------------------------

    def _limit(self, ip: str, code: str | None, now: float) -> None:
        for limiter, key in ((self.ip_limiter, f"ip:{ip}"), (self.code_limiter, f"code:{code}")):
            if key.endswith(":None"):
                continue
            allowance = limiter.hit(key, now)
            if not allowance.allowed:
                raise LoginRefused(
                    "slow_down",
                    "too many attempts; wait a moment",
                    status=429,
                    retry_after=allowance.retry_after,
                )

    def page(self, typed_code: str, *, ip: str) -> SessionPage:
        """Resolve a typed or scanned user code for the approval page."""
        now = self.clock()
        try:
            code = normalize_user_code(typed_code)
        except RemoteProtocolError:
            code = None
        try:
            self._limit(ip, code, now)
        except LoginRefused as exc:
            return SessionPage("limited", retry_after=exc.retry_after or 60)
        session = None if code is None else self.store.get_login_session_by_user_code(code)
        if session is None:
            return SessionPage("unknown")
        session = expire_if_due(session, now)
        return SessionPage(session.state.value, session)

    def _active(self, user_code: str) -> LoginSession:
        try:
            code = normalize_user_code(user_code)
        except RemoteProtocolError:
            raise LoginRefused("invalid_request", "unknown code", status=404) from None
        session = self.store.get_login_session_by_user_code(code)
        if session is None:
            raise LoginRefused("invalid_request", "unknown code", status=404)
        return session

    def _require_pending(self, session: LoginSession, now: float) -> None:
        if not self.login.enabled():
            raise LoginRefused("temporarily_unavailable", "sign-in is turned off", status=503)
        current = expire_if_due(session, now)
        if current.state is not SessionState.PENDING:
            raise LoginRefused(
                "invalid_request", f"this request is already {current.state.value}", status=409
            )

    # --- claim steps 4–5: the password proof ---------------------------------

    def _verifier(self, username: str) -> tuple[ScramVerifier, bool]:
        user = self.store.get_user(username)
        if user is None:
            return decoy_verifier(username.casefold(), secret=self._decoy_key), False
        return user.scram_verifier, True

    def _check_attempts(self, username: str, real: bool, now: float) -> None:
        if real:
            user = self.store.get_user(username)
            state = user.attempt_state if user is not None else self.decoys.get(username)
        else:
            state = self.decoys.get(username)
        allowance = LOCKOUT.check(state, now)
        if not allowance.allowed:
            raise LoginRefused(
                "too_many_attempts",
                "too many wrong passwords; try again later",
                status=429,
                retry_after=allowance.retry_after,
            )

    def scram_start(self, *, user_code: str, client_first: str, ip: str) -> tuple[str, str]:
        """client-first in; server-first and the sealed exchange token out."""
        now = self.clock()
        session = self._active(user_code)
        self._limit(ip, session.user_code, now)
        self._require_pending(session, now)
        verifier, real = self._verifier(session.username)
        self._check_attempts(session.username, real, now)
        nonce = b64url(self.random(_NONCE_BYTES))
        exchange = ScramServerExchange(
            session.reference, verifier, random=self.random, server_nonce=nonce
        )
        try:
            server_first = exchange.start(client_first)
        except InvalidMessage:
            raise LoginRefused("invalid_request", "malformed SCRAM message") from None
        sealed = self._seal(
            {
                "ref": session.reference,
                "code": session.user_code,
                "cf": client_first,
                "sn": nonce,
                "exp": now + EXCHANGE_TTL,
            }
        )
        return server_first, sealed

    def scram_finish(
        self, *, exchange: str, client_final: str, ip: str, user_agent: str
    ) -> ApprovalResult:
        """Verify the proof; on success approve the session (or deny it, if the
        account is disabled or locked) and announce the result to the device."""
        now = self.clock()
        data = self._open(exchange, now)
        session = self._active(str(data["code"]))
        if session.reference != data["ref"]:
            raise LoginRefused("invalid_request", "unknown code", status=404)
        self._require_pending(session, now)
        verifier, real = self._verifier(session.username)
        self._check_attempts(session.username, real, now)
        server = ScramServerExchange(
            session.reference, verifier, random=self.random, server_nonce=str(data["sn"])
        )
        try:
            server.start(str(data["cf"]))
            server_final = server.finish(client_final)
        except InvalidMessage:
            self._password_failed(session, real, now, ip=ip, user_agent=user_agent)
            raise LoginRefused("access_denied", "the password was not accepted") from None
        user = self.store.record_password_success(session.username, now=now)
        active = not user.disabled
        decided = approve(
            session,
            now=now,
            approver_ip=ip,
            approver_user_agent=user_agent,
            account_active=active,
        )
        self._store_decision(session, decided, now, ip=ip, user_agent=user_agent)
        match = decided.match_number if decided.state is SessionState.APPROVED else None
        return ApprovalResult(decided.state.value, server_final, match)

    def _password_failed(
        self, session: LoginSession, real: bool, now: float, *, ip: str, user_agent: str
    ) -> None:
        if real:
            user = self.store.record_password_failure(session.username, now=now)
            locked = user.locked
        else:
            locked = self.decoys.record_failure(session.username, now).locked
        self.store.audit(
            AuditEvent.LOCKED if locked else AuditEvent.PASSWORD_FAILED,
            now=now,
            username=session.username,
            ip=ip,
            user_agent=user_agent,
            session_ref=session.reference,
        )

    def deny(self, *, user_code: str, ip: str, user_agent: str) -> str:
        """The phone's Deny; needs no password, so a phished user can always refuse."""
        now = self.clock()
        session = self._active(user_code)
        self._limit(ip, None, now)
        try:
            decided = deny(session, now=now, approver_ip=ip, approver_user_agent=user_agent)
        except LocalProtocolError:
            raise LoginRefused("invalid_request", "already decided", status=409) from None
        self._store_decision(session, decided, now, ip=ip, user_agent=user_agent)
        return decided.state.value

    def _store_decision(
        self, before: LoginSession, after: LoginSession, now: float, *, ip: str, user_agent: str
    ) -> None:
        try:
            self.store.update_login_session(after, expected_state=before.state)
        except StaleSession:
            raise LoginRefused("invalid_request", "already decided", status=409) from None
        self.login._audit_decision(after, now, ip=ip, user_agent=user_agent)
        self.login._publish(after)

    # --- the sealed exchange token --------------------------------------------

    def _seal(self, data: dict[str, object]) -> str:
        body = b64url(json.dumps(data, separators=(",", ":")).encode())
        mac = hmac.new(self._exchange_key, body.encode(), "sha256").digest()
        return f"{body}.{b64url(mac)}"

    def _open(self, token: str, now: float) -> dict[str, object]:
        body, _, mac = token.partition(".")
        expected = b64url(hmac.new(self._exchange_key, body.encode(), "sha256").digest())
        if len(token) > 4096 or not hmac.compare_digest(mac.encode(), expected.encode()):
            raise LoginRefused("invalid_request", "exchange expired; start again")
        data = json.loads(unb64url(body))
        if not isinstance(data, dict) or float(data.get("exp", 0)) <= now:
            raise LoginRefused("invalid_request", "exchange expired; start again")
        return data


def started_at_text(session: LoginSession) -> str:
    """``14:02``: the start time in the server's local time, as the page shows it."""
    return time.strftime("%H:%M", time.localtime(session.created_at))
