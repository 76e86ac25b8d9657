"""Cross-device login, device side: US 9,635,022 B2 claim steps 1, 2 and 6.

RFC 8628 on top of the sans-I/O core in :mod:`hatchway.login`:

* :meth:`LoginService.start` is the device authorization endpoint (§3.1–3.2):
  the device sends the username as ``login_hint`` and never a password (step 1);
  the server opens a session and returns its identifiers (step 2). The answer
  looks the same whether or not the account exists.
* :meth:`LoginService.token` is the token endpoint (§3.4–3.5) for the
  device_code grant, and for the refresh_token grant with rotation (RFC 6749 §6,
  reuse detection per RFC 6819 §5.2.2.3). The decision itself is
  :func:`hatchway.login.poll`; this module only loads, stores, audits and mints.
* :meth:`LoginService.device_view` backs the push endpoint (step 6: the device
  learns the result via a reference derived from its identifier).

Both endpoints serve registered clients only (issue 8 §1,
:mod:`hatchway.flows.clients`): an unknown or disabled client gets
``invalid_client`` (RFC 6749 §5.2), a scope not registered for the client
``invalid_scope``, and the session gets the client's anti-phishing step
(:class:`hatchway.clients.AntiPhishing`) and its token lifetimes.

Polls of a PENDING session are answered without a store write, and usually
without the store at all: :mod:`hatchway.flows.login.polls` keeps their timing
and snapshots in memory (see there for the trade-offs across replicas).
:meth:`LoginService.poll_from_memory` is that fast path; it never blocks, so
the ASGI route calls it on the event loop. Every other method is synchronous
(the store is); the routes call them in worker threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from typing import Any

from hatchway.clients import AntiPhishing, ClientRecord, ScopeRefused, grant_scope
from hatchway.config import Settings
from hatchway.flows.clients import ClientCache, authenticate_client
from hatchway.flows.login.common import (
    FLOW_FLAG,
    MAX_FIELD,
    SCRAM_ITERATIONS_FLAG,
    LoginRefused,
    Notifier,
    has_bidi_controls,
    limits_or_503,
    login_channel,
    sanitize_device_name,
)
from hatchway.flows.login.common import DeviceView as DeviceView
from hatchway.flows.login.common import form_field as _field
from hatchway.flows.login.polls import DECISIONS_CHANNEL, PendingPolls
from hatchway.flows.login.tokens import ACCESS_TOKEN_TYP as ACCESS_TOKEN_TYP
from hatchway.flows.login.tokens import REFRESH_GRANT as REFRESH_GRANT
from hatchway.flows.login.tokens import TokenGrants, _sha256
from hatchway.flows.oauth.client_auth import authenticator_for
from hatchway.limits import Bucket, Limits, MemoryLimits
from hatchway.login import (
    GrantType,
    IssueTokens,
    LoginSession,
    PendingReason,
    SessionState,
    SlowDown,
    TokenBucket,
    TokenError,
    hash_device_code,
    new_device_code,
    new_match_number,
    new_session,
    new_user_code,
    poll,
)
from hatchway.login.antiphishing import new_code_choices
from hatchway.login.authorization import DeviceAuthorization as DeviceAuthorization
from hatchway.login.polling import AuthorizationPending
from hatchway.login.ratelimit import ip_key
from hatchway.runtime import Clock, Random
from hatchway.server.datadir import ServerIdentity
from hatchway.store import MAX_USERNAME_LENGTH, Store
from hatchway.store.login_errors import (
    StaleSession,
    UserCodeTaken,
)
from hatchway.store.login_records import AuditEvent

log = logging.getLogger("hatchway.login")

DEVICE_AUTHORIZATION_PATH = "/oauth/device_authorization"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path
WAIT_PATH = "/oauth/device/wait"
VERIFICATION_PATH = "/login"
WHOAMI_PATH = "/api/whoami"
_MAX_FIELD = MAX_FIELD
_CAS_RETRIES = 5
_SWEEP_EVERY = 30.0
_ITERATIONS_CACHE = 30.0
_ACTIVE = frozenset({SessionState.PENDING, SessionState.APPROVED})


def _poll_key(device_code_hash: bytes) -> str:
    """The shared poll gate's key for one session (limits backend namespace ``poll:``)."""
    return f"poll:{device_code_hash.hex()}"


class LoginService(TokenGrants):
    """Device authorization, token issue and push state for the login flow."""

    def __init__(
        self,
        *,
        store: Store,
        identity: ServerIdentity,
        settings: Settings,
        clock: Clock,
        random: Random,
        bus: Notifier | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.random = random
        self.bus = bus
        self.identity = identity
        self._signing_jwk = identity.signing_key.to_jwk(private=True)
        self._verifying_jwk = identity.signing_key.public().to_jwk()
        self._last_sweep = 0.0
        self._iteration_counts: tuple[float, dict[int, int]] | None = None
        self.pending = PendingPolls()
        self.clients = ClientCache(store)
        # RFC 7523 private_key_jwt (issue 8 §3); the registry's authenticate_client
        # covers the other methods.
        self.client_auth = authenticator_for(
            store,
            issuer=settings.issuer,
            token_endpoint=settings.issuer + TOKEN_PATH,
            clock=clock,
        )
        # SQLite admits one writer at a time and makes the others retry in its
        # busy handler, which sleeps for up to 100 ms per retry; under load that
        # sleeping, not the work, sets the throughput. Queueing this process's
        # login writes on a lock instead keeps SQLite's lock uncontended here.
        # PostgreSQL takes row locks and needs no such help.
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if store.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        # Every budget of the flow (this one, the phone page's, the password
        # guard's, single-use exchanges) lives here: memory, or Redis for replicas.
        self.limits: Limits = MemoryLimits() if limits is None else limits
        per_minute = settings.login_start_per_minute
        # Each start costs a row for expires_in seconds: bound it per client IP.
        self.start_limiter = Bucket(
            self.limits,
            "start",
            TokenBucket(capacity=per_minute, refill_per_second=per_minute / 60),
        )

    # --- admin switch ---------------------------------------------------------

    def enabled(self) -> bool:
        return self.store.get_flag(FLOW_FLAG) != "1"

    def set_enabled(self, enabled: bool, *, actor: str = "operator") -> None:
        self.store.set_flag(FLOW_FLAG, "0" if enabled else "1", now=self.clock())
        self.store.audit(
            AuditEvent.FLOW_DISABLED,
            now=self.clock(),
            detail={"enabled": enabled, "actor": actor},
        )

    # --- claim steps 1–2: device authorization ---------------------------------

    def start(
        self,
        form: dict[str, str],
        *,
        ip: str,
        user_agent: str,
        authorization: str | None = None,
    ) -> DeviceAuthorization:
        """Open a PENDING session for ``login_hint`` and return its codes.

        ``authorization`` is the request's ``Authorization`` header, if any
        (a confidential client's credentials; see flows/clients).
        """
        with self._write_lock:
            return self._start(form, ip=ip, user_agent=user_agent, authorization=authorization)

    def _start(
        self, form: dict[str, str], *, ip: str, user_agent: str, authorization: str | None
    ) -> DeviceAuthorization:
        # A name longer than any account's is refused here, not by the database.
        username = _field(form, "login_hint", max_length=MAX_USERNAME_LENGTH)
        requested_scope = _field(form, "scope", required=False)
        raw_name = _field(form, "device_name", required=False)
        if raw_name and has_bidi_controls(raw_name):
            # Nothing honest needs to reorder the page's sentence (issue 8 §5.6).
            raise LoginRefused(
                "invalid_request", "device_name must not contain bidirectional controls"
            )
        now = self.clock()
        if not self.enabled():
            self.store.audit(
                AuditEvent.FLOW_DISABLED, now=now, username=username, ip=ip, user_agent=user_agent
            )
            raise LoginRefused(
                "temporarily_unavailable", "sign-in from devices is turned off", status=503
            )
        with limits_or_503():
            allowance = self.start_limiter.hit(f"ip:{ip_key(ip)}", now)
        if not allowance.allowed:
            raise LoginRefused(
                "slow_down",
                "too many sign-in requests from this address",
                status=429,
                retry_after=allowance.retry_after,
            )
        client = self._client(form, authorization, now)
        client_id = client.client_id
        try:
            scope = grant_scope(client, requested_scope)
        except ScopeRefused as exc:
            raise LoginRefused(
                "invalid_scope", "scope not allowed for this client", reason=str(exc)
            ) from None
        # The device names itself: keep only what can be shown without tricks.
        device_name = (
            sanitize_device_name(raw_name or client_id) or sanitize_device_name(client_id) or "?"
        )
        self._sweep(now)
        s = self.settings
        mode = client.anti_phishing
        match = new_match_number(self.random) if mode is AntiPhishing.PHONE_NUMBER else None
        device_code = new_device_code(self.random)
        # The session is opened whether or not the account exists (no enumeration);
        # an unknown name simply can never be approved.
        for _ in range(_CAS_RETRIES):
            user_code = new_user_code(self.random)
            choices = (
                new_code_choices(user_code, self.random)
                if mode is AntiPhishing.CONFIRM_CODE
                else None
            )
            session = new_session(
                device_code_hash=hash_device_code(device_code),
                user_code=user_code,
                username=username,
                client_id=client_id,
                scope=scope,
                device_name=device_name,
                initiator_ip=ip,
                initiator_user_agent=user_agent[:_MAX_FIELD],
                now=now,
                expires_in=s.login_expires_in,
                interval=s.login_interval,
                match_number=match,
                code_choices=choices,
            )
            try:
                self.store.create_login_session(session)
                break
            except UserCodeTaken:
                continue  # a collision among live codes; draw another
        else:  # pragma: no cover - needs ~20**8 / 5 live sessions
            raise LoginRefused("temporarily_unavailable", status=503, reason="user codes exhausted")
        self.store.audit(
            AuditEvent.START,
            now=now,
            username=username,
            ip=ip,
            user_agent=user_agent,
            session_ref=session.reference,
            detail={"client_id": client_id, "device_name": device_name, "scope": scope},
        )
        base = s.issuer + VERIFICATION_PATH
        return DeviceAuthorization(
            device_code=device_code,
            user_code=session.user_code,
            verification_uri=base,
            verification_uri_complete=f"{base}?user_code={session.user_code}",
            expires_in=s.login_expires_in,
            interval=s.login_interval,
        )

    def _client(self, form: dict[str, str], authorization: str | None, now: float) -> ClientRecord:
        """The registered, enabled client of this request, or ``invalid_client``."""
        try:
            if "client_assertion" in form or "client_assertion_type" in form:
                client = self.client_auth.authenticate(
                    authorization, form, allow_public=False
                ).client
            else:
                client = authenticate_client(self.store, form, authorization)
        except LoginRefused:
            self.clients.remember(None, form.get("client_id", ""), now)
            raise
        self.clients.remember(client, client.client_id, now)
        return client

    def sweep_if_due(self, now: float) -> None:
        """Every login endpoint calls this, so expiries are audited even if nobody polls."""
        if 0 <= now - self._last_sweep < _SWEEP_EVERY:
            return
        with self._write_lock:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Expire overdue sessions at most every 30 s, so every expiry is audited."""
        if 0 <= now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        for session in self.store.expire_login_sessions(now=now):
            self._audit_decision(session, now)
            self._publish(session)

    # --- claim step 6: push and token ------------------------------------------

    def _load(self, device_code: str, client_id: str) -> LoginSession:
        return self._load_hash(hash_device_code(device_code), client_id)

    def _load_hash(self, device_code_hash: bytes, client_id: str) -> LoginSession:
        session = self.store.get_login_session_by_device_code_hash(device_code_hash)
        if session is None or session.client_id != client_id:
            raise LoginRefused("invalid_grant", "unknown device_code", reason="no such session")
        return session

    def device_view(self, form: dict[str, str]) -> DeviceView:
        """The session's state for the push endpoint; never changes the session."""
        self.sweep_if_due(self.clock())
        session = self._load(_field(form, "device_code"), _field(form, "client_id"))
        state = session.state
        if state in (SessionState.PENDING, SessionState.APPROVED) and session.is_due(self.clock()):
            state = SessionState.EXPIRED
        return DeviceView(session.reference, state, session.number_matching, session.expires_at)

    def token(
        self,
        form: dict[str, str],
        *,
        ip: str,
        user_agent: str,
        authorization: str | None = None,
    ) -> dict[str, Any]:
        """The token endpoint: device_code grant or refresh_token grant."""
        grant = _field(form, "grant_type")
        now = self.clock()
        self.sweep_if_due(now)
        client = self._client(form, authorization, now)
        if grant == GrantType.DEVICE_CODE:
            with self._write_lock:
                return self._device_grant(form, ip=ip, user_agent=user_agent, client=client)
        if grant == REFRESH_GRANT:
            with self._write_lock:
                return self._refresh_grant(form, ip=ip, user_agent=user_agent, client=client)
        raise LoginRefused("unsupported_grant_type")

    def _account_active(self, username: str, now: float) -> bool:
        # Only the operator's "disabled" ends sessions. Password-attempt limits
        # (flows/login/guard.py) stop new attempts only: anyone who knows a
        # username can trip them, and must not sign its owner's devices out.
        user = self.store.get_user(username)
        return user is not None and not user.disabled

    def scram_iterations(self) -> int:
        """PBKDF2 count ``users add`` last recorded, else the configured one."""
        recorded = self.store.get_flag(SCRAM_ITERATIONS_FLAG)
        if recorded is not None and recorded.isdigit():
            return int(recorded)
        return self.settings.login_scram_iterations

    def iteration_counts(self) -> dict[int, int]:
        """How many accounts use each PBKDF2 count, for decoys to match (cached briefly).

        Read from the accounts themselves, not from settings or a flag, so a
        decoy can never show a count no real account has. With no accounts
        yet, the count the next ``users add`` would use.
        """
        now = self.clock()
        cached = self._iteration_counts
        if cached is not None and 0 <= now - cached[0] < _ITERATIONS_CACHE:
            return cached[1]
        counts: dict[int, int] = {}
        for user in self.store.list_users():
            i = user.scram_verifier.iterations
            counts[i] = counts.get(i, 0) + 1
        if not counts:
            counts = {self.scram_iterations(): 1}
        self._iteration_counts = (now, counts)
        return counts

    def poll_from_memory(self, form: dict[str, str]) -> LoginRefused | None:
        """``authorization_pending`` for a poll that needs no store, else ``None``.

        Only a device_code grant without ``match_number`` qualifies (a number is
        only checked once approved, which memory never answers). ``None`` means
        "call :meth:`token`", never a refusal.
        """
        if form.get("grant_type") != GrantType.DEVICE_CODE or "match_number" in form:
            return None
        device_code = form.get("device_code")
        client_id = form.get("client_id")
        if not device_code or not client_id or max(len(device_code), len(client_id)) > _MAX_FIELD:
            return None
        if "client_secret" in form or self.clients.peek(client_id, self.clock()) is not True:
            return None  # the store path (re)checks the client
        if self.pending.accept(hash_device_code(device_code), client_id, self.clock()):
            return LoginRefused(
                TokenError.AUTHORIZATION_PENDING.value, PendingReason.AWAITING_USER.value
            )
        return None

    @property
    def shared_polls(self) -> bool:
        """Poll timing is also kept in the shared limits (Redis), for every replica."""
        return not isinstance(self.limits, MemoryLimits)

    async def poll_fast(self, form: dict[str, str]) -> LoginRefused | None:
        """:meth:`poll_from_memory`, plus the shared poll gate when there is one.

        A poll memory accepts is answered only if the shared gate agrees it is
        on time (another replica may have accepted one just now); otherwise the
        store path decides, and answers ``slow_down``.
        """
        fast = self.poll_from_memory(form)
        if fast is None or not self.shared_polls:
            return fast
        device_code_hash = hash_device_code(form["device_code"])
        timing = self.pending.timing(device_code_hash)
        if timing is None:
            return None
        interval, expires_at = timing
        now = self.clock()
        with limits_or_503():
            last = await self.limits.agate(
                _poll_key(device_code_hash), now=now, interval=interval, ttl=expires_at - now
            )
        return fast if last is None else None

    def _shared_last_poll(self, session: LoginSession, now: float) -> float | None:
        """The last poll as the shared gate says, marking this one if it is on time.

        None (on time) means no earlier poll counts against this one; a time
        (too soon) is the other poll that did, whichever replica accepted it.
        """
        with limits_or_503():
            return self.limits.gate(
                _poll_key(session.device_code_hash),
                now=now,
                interval=session.interval,
                ttl=max(session.expires_at - now, float(session.interval)),
            )

    def _device_grant(
        self, form: dict[str, str], *, ip: str, user_agent: str, client: ClientRecord
    ) -> dict[str, Any]:
        device_code_hash = hash_device_code(_field(form, "device_code"))
        client_id = client.client_id
        match_number = form.get("match_number") or None
        if match_number is not None and len(match_number) > 8:
            raise LoginRefused("invalid_request", "malformed match_number")
        gate: list[float | None] = []  # the shared gate's answer; asked once per request
        for _ in range(_CAS_RETRIES):
            epoch = self.pending.epoch
            stored = self._load_hash(device_code_hash, client_id)
            session = self.pending.merge(stored)
            now = self.clock()
            if self.shared_polls and stored.state in _ACTIVE:
                if not gate:
                    gate.append(self._shared_last_poll(session, now))
                session = dataclasses.replace(session, last_poll_at=gate[0])
            result = poll(
                session,
                now=now,
                match_number=match_number,
                # The account matters only to a session that could issue tokens.
                account_active=session.state is not SessionState.APPROVED
                or self._account_active(session.username, now),
            )
            decided = result.session
            if decided.state is SessionState.PENDING and decided.interval == stored.interval:
                # An accepted (or repeated) pending poll: nothing durable changed.
                self.pending.remember(decided, epoch=epoch, now=now)
                break
            # Consuming and minting are one step: mint first (the tokens exist
            # only in this response until it is sent), then CONSUME by
            # compare-and-set. A mint that fails leaves the session APPROVED for
            # the next poll; a lost race revokes what was minted.
            issued = None
            if isinstance(result.decision, IssueTokens):
                issued = self._mint(result.decision, now=now, client=client)
            ended = decided.state is stored.state and stored.state not in _ACTIVE
            if decided != stored and not ended:  # an ended session keeps its last row
                try:
                    self.store.update_login_session(
                        decided, expected_state=stored.state, expected=stored
                    )
                except StaleSession:
                    if issued is not None:
                        self._discard(issued, now)
                    continue  # another poll, replica or the phone moved it first: decide again
                if decided.state is not stored.state:
                    self._audit_decision(decided, now, ip=ip, user_agent=user_agent)
                    self._publish(decided)
            self.pending.remember(decided, epoch=epoch, now=now)
            if issued is not None:
                return issued
            break
        else:
            raise LoginRefused("slow_down", interval=session.interval, reason="contention")
        decision = result.decision
        if isinstance(decision, SlowDown):
            raise LoginRefused("slow_down", interval=decision.interval)
        description = ""
        if isinstance(decision, AuthorizationPending):
            description = decision.reason.value
            if decision.reason is PendingReason.MATCH_NUMBER_MISMATCH:
                description += f"; attempts_left={decision.attempts_left}"
        error = decision.error.value if decision.error is not None else "server_error"
        raise LoginRefused(error, description)

    def _discard(self, issued: dict[str, Any], now: float) -> None:
        """Revoke the family of tokens minted for a consume that lost its race."""
        record = self.store.get_refresh_token(_sha256(str(issued["refresh_token"])))
        if record is not None:
            self.store.revoke_session_family(record.family_id, now=now)

    # --- records --------------------------------------------------------------

    def _audit_decision(
        self,
        session: LoginSession,
        now: float,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        event = {
            SessionState.APPROVED: AuditEvent.APPROVED,
            SessionState.DENIED: AuditEvent.DENIED,
            SessionState.EXPIRED: AuditEvent.EXPIRED,
            SessionState.CONSUMED: AuditEvent.CONSUMED,
            SessionState.WITHDRAWN: AuditEvent.WITHDRAWN,
        }.get(session.state)
        if event is None:
            return
        self.store.audit(
            event,
            now=now,
            username=session.username,
            ip=ip or session.approver_ip or session.initiator_ip,
            user_agent=user_agent or session.approver_user_agent or session.initiator_user_agent,
            session_ref=session.reference,
            detail={"device_name": session.device_name},
        )

    def _publish(self, session: LoginSession) -> None:
        """Announce a decision: wake the waiting device, and stop every replica
        answering this session's polls from memory (login_polls.py)."""
        self.pending.forget(session.reference)
        if self.bus is not None:
            self.bus.publish(login_channel(session.reference), session.state.value)
            self.bus.publish(DECISIONS_CHANNEL, session.reference)
