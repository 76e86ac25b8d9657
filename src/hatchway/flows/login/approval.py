"""Cross-device login, phone side: US 9,635,022 B2 claim steps 3–5.

The phone reaches the session by its user code (step 3: the QR code carries
``verification_uri_complete``, or the code is typed). The page asks for the
password only (step 4) and proves it with SCRAM-SHA-256 bound to the session
(step 5, RFC 5802/7677, see :mod:`hatchway.login.scram`). This module:

* looks sessions up by user code under a per-IP rate limit that is spent
  *before* the lookup, on every endpoint that takes a code, so an unknown code
  costs a guesser exactly what a live one does (RFC 8628 §5.1); renders
  nothing itself (``server/login_pages.py`` does);
* runs the SCRAM exchange *statelessly*: ``scram_start`` hands the page an
  HMAC-sealed exchange token holding the client-first message and the server
  nonce, and ``scram_finish`` rebuilds the exchange from it, so the two
  requests may land on different replicas; each token is good for one finish
  (its id is remembered for its 120 s life, in the shared limits backend, so on
  every replica), only in the browser that started it (it carries a hash of
  the page's CSRF cookie), and finish is limited per IP and per code;
* for a confirm-code client (issue 8 §2, :mod:`hatchway.login.antiphishing`)
  asks a user who came by the QR link to pick the device's code first, and
  counts a wrong pick before any password work;
* lets Deny withdraw an approval until the device has collected its tokens,
  and says plainly when it is too late;
* applies the password-attempt limits of :mod:`hatchway.flows.login.guard`
  (unknown accounts behave, and cost, the same as real ones), then approves
  through the one transition table with a compare-and-set that also guards the
  poll counters, announces the result on the bus and writes the audit log.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from hatchway.clients import ClientRecord
from hatchway.errors import InvalidMessage, LocalProtocolError, RemoteProtocolError
from hatchway.flows.login.common import (
    LoginRefused,
    account_key,
    b64url,
    limits_or_503,
    server_secret,
    unb64url,
)
from hatchway.flows.login.guard import PasswordGuard
from hatchway.flows.login.service import LoginService
from hatchway.limits import Bucket, Limits
from hatchway.login import (
    LoginSession,
    ScramServerExchange,
    ScramVerifier,
    SessionState,
    TokenBucket,
    approve,
    decoy_iterations,
    decoy_verifier,
    deny,
    expire_if_due,
    normalize_user_code,
)
from hatchway.login.antiphishing import check_code_pick, needs_code_pick
from hatchway.login.ratelimit import ip_key
from hatchway.store.login_errors import StaleSession
from hatchway.store.login_records import AuditEvent, UserRecord

EXCHANGE_TTL = 120.0
"""Seconds between server-first and client-final; PBKDF2 on a slow phone fits."""
_NONCE_BYTES = 18
_CAS_RETRIES = 5
_GONE = "this code is unknown, expired or already used"


@dataclass(frozen=True, slots=True)
class SessionPage:
    """What the approval page shows; ``session`` is None for an unknown code."""

    status: str  # a SessionState value, or "unknown" | "limited"
    session: LoginSession | None = None
    retry_after: int = 0
    client: ClientRecord | None = None
    """The registered client that started the session (None if since removed)."""


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    status: str  # "approved" | "denied" | "expired"
    server_final: str
    match_number: str | None


def _bucket(limits: Limits, name: str, per_minute: int) -> Bucket:
    policy = TokenBucket(capacity=2 * per_minute, refill_per_second=per_minute / 60)
    return Bucket(limits, name, policy)


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
        # ~10 lookups a minute, spent before the lookup, on every endpoint.
        per_minute = login.settings.login_attempts_per_minute
        limits = login.limits
        self.ip_limiter = _bucket(limits, "lookup", per_minute)
        # Password proofs: per address, and per code. The per-code bucket counts
        # proofs, not page views, so a shoulder-surfer who merely *reads* the
        # code cannot lock its owner out of the page.
        self.finish_limiter = _bucket(limits, "finish", per_minute)
        self.code_limiter = Bucket(
            limits, "code", TokenBucket(capacity=10, refill_per_second=1 / 60)
        )
        self.guard = PasswordGuard(
            session_max_failures=login.settings.login_session_max_failures, limits=limits
        )
        self.limits = limits

    # --- claim step 3: finding the session ------------------------------------

    @staticmethod
    def _spend(limiter: Bucket, key: str, now: float) -> None:
        with limits_or_503():
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
        self.login.sweep_if_due(now)
        try:
            self._spend(self.ip_limiter, f"ip:{ip_key(ip)}", now)
        except LoginRefused as exc:
            # Over budget, or the shared limits cannot be asked: fail closed.
            return SessionPage("limited", retry_after=exc.retry_after or 60)
        try:
            code = normalize_user_code(typed_code)
        except RemoteProtocolError:
            return SessionPage("unknown")
        session = self.store.get_login_session_by_user_code(code)
        if session is None:
            return SessionPage("unknown")
        session = expire_if_due(session, now)
        client = self.store.get_client(session.client_id)
        return SessionPage(session.state.value, session, client=client)

    def _lookup(self, user_code: str, *, ip: str, now: float) -> LoginSession:
        """The pending session for ``user_code``, after the per-IP limit is paid.

        Unknown, malformed, ended and expired codes all get the same answer.
        """
        self.login.sweep_if_due(now)
        self._spend(self.ip_limiter, f"ip:{ip_key(ip)}", now)
        try:
            session = self.store.get_login_session_by_user_code(normalize_user_code(user_code))
        except RemoteProtocolError:
            session = None
        if session is None or expire_if_due(session, now).state is not SessionState.PENDING:
            raise LoginRefused("invalid_request", _GONE, status=404)
        if not self.login.enabled():
            raise LoginRefused("temporarily_unavailable", "sign-in is turned off", status=503)
        return session

    # --- claim steps 4–5: the password proof ---------------------------------

    def _verifier(self, username: str) -> tuple[ScramVerifier, UserRecord | None]:
        # Same work for real and unknown names: one user lookup, the (cached) counts.
        user = self.store.get_user(username)
        counts = self.login.iteration_counts()
        if user is None:
            key = account_key(username)
            # The decoy's i= is drawn from the real accounts' counts (issue 8 §5.5).
            iterations = decoy_iterations(key, secret=self._decoy_key, counts=counts)
            return decoy_verifier(key, secret=self._decoy_key, iterations=iterations), None
        return user.scram_verifier, user

    def _check_attempts(
        self, session: LoginSession, user: UserRecord | None, ip: str, now: float
    ) -> None:
        with limits_or_503():
            allowance = self.guard.check(
                account=account_key(session.username),
                ip=ip,
                session=session.reference,
                now=now,
                reset_since=None if user is None else user.unlocked_at,
            )
        if not allowance.allowed:
            raise LoginRefused(
                "too_many_attempts",
                "too many wrong passwords; try again later",
                status=429,
                retry_after=allowance.retry_after,
            )

    def scram_start(
        self,
        *,
        user_code: str,
        client_first: str,
        ip: str,
        typed: bool = False,
        picked: str | None = None,
        user_agent: str = "",
        browser: str = "",
    ) -> tuple[str, str]:
        """client-first in; server-first and the sealed exchange token out.

        ``typed``: the user typed the code at ``verification_uri`` (the route
        checked the page's proof of that). Otherwise, for a confirm-code
        client, ``picked`` must be the code the device shows. ``browser`` is the
        page's CSRF cookie: the exchange is sealed with its hash, so only the
        browser that started it can finish it.
        """
        now = self.clock()
        session = self._lookup(user_code, ip=ip, now=now)
        if needs_code_pick(session, typed=typed):
            self._check_pick(session, picked, now, ip=ip, user_agent=user_agent)
        verifier, user = self._verifier(session.username)
        self._check_attempts(session, user, ip, now)
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
                "id": b64url(self.random(16)),
                "ref": session.reference,
                "code": session.user_code,
                "cf": client_first,
                "sn": nonce,
                "br": _browser_binding(browser),
                "exp": now + EXCHANGE_TTL,
            }
        )
        return server_first, sealed

    def scram_finish(
        self, *, exchange: str, client_final: str, ip: str, user_agent: str, browser: str = ""
    ) -> ApprovalResult:
        """Verify the proof; on success approve the session (or deny it, if the
        account is disabled) and announce the result to the device.

        ``browser`` must be the CSRF cookie the exchange was started with.
        """
        now = self.clock()
        self.login.sweep_if_due(now)
        self._spend(self.finish_limiter, f"ip:{ip_key(ip)}", now)
        data = self._open(exchange, now)
        # Before anything is spent: another browser holding a copy of the token
        # must neither finish it nor burn it, nor drain the code's budget.
        if not hmac.compare_digest(str(data.get("br", "")), _browser_binding(browser)):
            raise LoginRefused("invalid_request", "exchange expired; start again")
        self._spend(self.code_limiter, f"code:{data['code']}", now)
        session = self.store.get_login_session_by_user_code(str(data["code"]))
        if (
            session is None
            or session.reference != data["ref"]
            or expire_if_due(session, now).state is not SessionState.PENDING
        ):
            raise LoginRefused("invalid_request", _GONE, status=404)
        # Recorded only for a live pending session: finishes against throw-away or
        # ended sessions cannot fill the single-use table and lock out real approvals.
        with limits_or_503():
            first = self.limits.use_once(
                f"exchange:{data['id']}", until=float(str(data["exp"])), now=now
            )
        if not first:
            raise LoginRefused("invalid_request", "exchange expired; start again")
        if not self.login.enabled():
            raise LoginRefused("temporarily_unavailable", "sign-in is turned off", status=503)
        verifier, user = self._verifier(session.username)
        self._check_attempts(session, user, ip, now)
        server = ScramServerExchange(
            session.reference, verifier, random=self.random, server_nonce=str(data["sn"])
        )
        try:
            server.start(str(data["cf"]))
            server_final = server.finish(client_final)
        except InvalidMessage:
            self._password_failed(session, user, now, ip=ip, user_agent=user_agent)
            raise LoginRefused("access_denied", "the password was not accepted") from None
        assert user is not None  # noqa: S101 - no proof verifies against a decoy
        with limits_or_503():
            self.guard.record_success(
                account=account_key(session.username), ip=ip, session=session.reference
            )
        user = self.store.record_password_success(session.username, now=now)
        active = not user.disabled
        decided = self._decide(
            session,
            lambda s: approve(
                s, now=now, approver_ip=ip, approver_user_agent=user_agent, account_active=active
            ),
            now,
            ip=ip,
            user_agent=user_agent,
        )
        match = decided.match_number if decided.state is SessionState.APPROVED else None
        return ApprovalResult(decided.state.value, server_final, match)

    def _password_failed(
        self,
        session: LoginSession,
        user: UserRecord | None,
        now: float,
        *,
        ip: str,
        user_agent: str,
    ) -> None:
        # Real and unknown accounts take the same path: memory, one audit row,
        # and (on the last allowed failure) the same session write.
        with limits_or_503():
            outcome = self.guard.record_failure(
                account=account_key(session.username),
                ip=ip,
                session=session.reference,
                now=now,
                reset_since=None if user is None else user.unlocked_at,
            )
        self.store.audit(
            AuditEvent.LOCKED if outcome.locked else AuditEvent.PASSWORD_FAILED,
            now=now,
            username=session.username,
            ip=ip,
            user_agent=user_agent,
            session_ref=session.reference,
        )
        if outcome.session_exhausted:
            # One session is not a grinding wheel: after N wrong proofs it ends.
            # LoginRefused: decided meanwhile (denied, approved, expired).
            with contextlib.suppress(LoginRefused):
                self._decide(
                    session,
                    lambda s: deny(s, now=now, approver_ip=ip, approver_user_agent=user_agent),
                    now,
                    ip=ip,
                    user_agent=user_agent,
                )

    def _check_pick(
        self, session: LoginSession, picked: str | None, now: float, *, ip: str, user_agent: str
    ) -> None:
        """Confirm-code: refuse (and count) a pick that is not the device's code."""
        if check_code_pick(session, picked, now=now).correct:
            return
        self.store.audit(
            AuditEvent.CODE_PICK_FAILED,
            now=now,
            username=session.username,
            ip=ip,
            user_agent=user_agent,
            session_ref=session.reference,
        )
        # LoginRefused: decided meanwhile; the pick is refused either way.
        with contextlib.suppress(LoginRefused):
            self._decide(
                session,
                lambda s: check_code_pick(s, picked, now=now).session,
                now,
                ip=ip,
                user_agent=user_agent,
            )
        raise LoginRefused(
            "wrong_code",
            "that is not the code your device shows; this request is cancelled. "
            "Start again on the device.",
            status=403,
        )

    def deny(self, *, user_code: str, ip: str, user_agent: str, session_ref: str = "") -> str:
        """The phone's Deny; needs no password, so a phished user can always refuse.

        Before approval it denies; after approval, until the device has
        collected its tokens, it withdraws the approval. Returns the new state
        ("denied", "withdrawn", "expired"). Raises :class:`LoginRefused`
        ``too_late`` (409) when the device already collected its tokens, if
        ``session_ref`` names that session (codes are reused once sessions end).
        """
        now = self.clock()
        self.login.sweep_if_due(now)
        self._spend(self.ip_limiter, f"ip:{ip_key(ip)}", now)
        try:
            code = normalize_user_code(user_code)
        except RemoteProtocolError:
            raise LoginRefused("invalid_request", _GONE, status=404) from None
        session = self.store.get_login_session_by_user_code(code)
        if session is None:
            self._raise_gone(code, session_ref)
        try:
            decided = self._decide(
                session,
                lambda s: deny(s, now=now, approver_ip=ip, approver_user_agent=user_agent),
                now,
                ip=ip,
                user_agent=user_agent,
            )
        except LoginRefused:
            self._raise_gone(code, session_ref)  # collected meanwhile, most likely
        return decided.state.value

    def _raise_gone(self, code: str, session_ref: str) -> NoReturn:
        latest = self.store.get_latest_login_session_by_user_code(code)
        if (
            latest is not None
            and latest.state is SessionState.CONSUMED
            and session_ref
            and hmac.compare_digest(latest.reference.encode(), session_ref.encode())
        ):
            raise LoginRefused(
                "too_late",
                "the device had already collected its sign-in; it can no longer be withdrawn here",
                status=409,
            )
        raise LoginRefused("invalid_request", _GONE, status=404)

    def _decide(
        self,
        session: LoginSession,
        decide: Callable[[LoginSession], LoginSession],
        now: float,
        *,
        ip: str,
        user_agent: str,
    ) -> LoginSession:
        """Apply ``decide`` with a compare-and-set on the state *and* the poll
        counters, re-reading and re-deciding when a poll changed them meanwhile
        (a concurrent ``slow_down`` must not be undone)."""
        current = session
        for _ in range(_CAS_RETRIES):
            try:
                decided = decide(current)
            except LocalProtocolError:
                raise LoginRefused("invalid_request", "already decided", status=409) from None
            try:
                self.store.update_login_session(
                    decided, expected_state=current.state, expected=current
                )
            except StaleSession:
                fresh = self.store.get_login_session_by_device_code_hash(current.device_code_hash)
                if fresh is None:
                    break
                current = fresh
                continue
            self.login._audit_decision(decided, now, ip=ip, user_agent=user_agent)
            self.login._publish(decided)
            return decided
        raise LoginRefused("invalid_request", "already decided", status=409)

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
        if not isinstance(data, dict) or float(data.get("exp", 0)) <= now or "id" not in data:
            raise LoginRefused("invalid_request", "exchange expired; start again")
        return data


def _browser_binding(cookie: str) -> str:
    """What an exchange stores of the browser's CSRF cookie: a hash, not the cookie."""
    digest = hashlib.sha256(b"hatchway scram exchange browser\x00" + cookie.encode()).digest()
    return b64url(digest)


def started_at_text(session: LoginSession) -> str:
    """``14:02 UTC``: the start time, unambiguous whatever the phone's time zone."""
    return time.strftime("%H:%M UTC", time.gmtime(session.created_at))


def started_at_iso(session: LoginSession) -> str:
    """``2024-05-01T14:02:00Z``, for the page's ``<time datetime>`` (the script localises it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.created_at))
