"""Password-attempt limits of the cross-device login, shared through one backend.

The issue asks for per-account back-off and lockout (RFC 8628 §5.1 for the
code, OWASP's authentication guidance for the password). A lock anyone can
trigger by knowing a username is also a denial of service, so the design is:

* **A lock only stops new password attempts.** It never touches existing
  sessions, access tokens or refresh tokens; only a *disabled* account (an
  operator's act) ends those.
* **Three counters, each with its own policy** (:data:`SESSION_MAX_FAILURES`,
  :data:`ACCOUNT_IP_POLICY`, :data:`ACCOUNT_POLICY`): per login session (one
  session allows a handful of wrong proofs, then it is denied), per account and
  client IP (a single source is slowed down hard and locked for an hour), and
  per account over all sources (a capped back-off and a short lock; the count
  starts again when the lock ends, so an attacker must keep paying to keep it).
* **Real and unknown accounts share these tables**, keyed by the store's
  ``username_key``: a wrong proof costs the same work, and backs off the same
  way, whether or not the name exists (no enumeration by behaviour or timing).
* **An operator's unlock reaches every replica**: ``hatchway users unlock``
  records the time in the account's own ``unlocked_at`` column, and failures
  recorded before it are ignored (``reset_since``). Only the operator writes
  it: a successful sign-in (which bumps ``updated_at``) must not end the
  locks other addresses earned (issue 8 defect 5.1).

The counters live behind :class:`~hatchway.limits.Limits`: process memory by
default, Redis (``HATCHWAY_REDIS_URL``) when several replicas must share them,
or N replicas would give an attacker N times every budget. The policy runs
here, in Python, on a state read from the backend and written back with its
compare-and-set, so both backends decide identically. :class:`UsedOnce` (the
memory single-use table) is re-exported from :mod:`hatchway.limits.memory`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from hatchway.limits import Limits, LimitsUnavailable, MemoryLimits
from hatchway.limits.memory import UsedOnce as UsedOnce
from hatchway.login.ratelimit import Allowance, AttemptState, LockoutPolicy, ip_key

SESSION_MAX_FAILURES = 5
"""Wrong proofs one login session may see before it is denied."""

ACCOUNT_IP_POLICY = LockoutPolicy(
    free_failures=3, base_delay=2.0, max_delay=300.0, lockout_after=10, lockout_duration=3600.0
)
"""One client IP against one account: 3 free, then 2 s, 4 s … 5 min; 10 lock it out for 1 h."""

ACCOUNT_POLICY = LockoutPolicy(
    free_failures=5,
    base_delay=1.0,
    max_delay=60.0,
    lockout_after=20,
    lockout_duration=900.0,
    forget_after=900.0,
)
"""All sources against one account: 5 free, then ≤ 60 s apart; 20 lock new
attempts for 15 min, after which the count restarts from zero."""

_ALLOW = Allowance(allowed=True, retry_after=0)




@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What one more wrong proof led to."""

    locked: bool
    """The account (from this IP, or from everywhere) is now locked for a while."""
    session_exhausted: bool
    """The session has seen :data:`SESSION_MAX_FAILURES` wrong proofs: deny it."""


_SWAP_RETRIES = 16
SESSION_COUNT_TTL = 3600.0
"""How long a login session's failure count is kept (sessions live at most an hour)."""


def _dump(state: AttemptState) -> str:
    return json.dumps(asdict(state), separators=(",", ":"), sort_keys=True)


def _parse(text: str | None) -> AttemptState | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
        return AttemptState(
            failures=int(data["failures"]),
            blocked_until=float(data["blocked_until"]),
            locked=bool(data["locked"]),
            last_failure_at=float(data["last_failure_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # not ours or damaged: counts as no history, and is overwritten


class _Table:
    """Attempt states under one policy, kept in a :class:`Limits` backend."""

    def __init__(self, name: str, policy: LockoutPolicy, limits: Limits) -> None:
        self.name = name
        self.policy = policy
        self.limits = limits

    def _key(self, key: str) -> str:
        return f"{self.name}:{key}"

    def _current(
        self, state: AttemptState | None, now: float, reset_since: float | None
    ) -> AttemptState:
        if state is None:
            return AttemptState()
        if reset_since is not None and state.last_failure_at < reset_since:
            return AttemptState()
        return self.policy.current(state, now)

    def get(self, key: str, now: float, reset_since: float | None) -> AttemptState:
        return self._current(_parse(self.limits.load(self._key(key))), now, reset_since)

    def _ttl(self, state: AttemptState, now: float) -> float:
        # Kept while it can still matter: the block, or the forgetting window.
        return max(state.blocked_until - now, 0.0) + self.policy.forget_after

    def fail(self, key: str, now: float, reset_since: float | None) -> AttemptState:
        name = self._key(key)
        for _ in range(_SWAP_RETRIES):
            raw = self.limits.load(name)
            state = self.policy.record_failure(self._current(_parse(raw), now, reset_since), now)
            if self.limits.swap(name, raw, _dump(state), ttl=self._ttl(state, now)):
                return state
        # Never drop a failure silently: the caller answers 503 (fail closed).
        raise LimitsUnavailable(f"{self.name}: too much contention on one key")

    def clear(self, key: str) -> None:
        self.limits.forget(self._key(key))


class PasswordGuard:
    """Per-session, per-(account, IP) and per-account password-attempt limits."""

    def __init__(
        self,
        *,
        session_max_failures: int = SESSION_MAX_FAILURES,
        limits: Limits | None = None,
    ) -> None:
        self.session_max_failures = session_max_failures
        self.limits: Limits = MemoryLimits() if limits is None else limits
        self._account = _Table("guard:account", ACCOUNT_POLICY, self.limits)
        self._account_ip = _Table("guard:account-ip", ACCOUNT_IP_POLICY, self.limits)

    @staticmethod
    def _pair(account: str, ip: str) -> str:
        return f"{account}\x00{ip_key(ip)}"

    @staticmethod
    def _session(session: str) -> str:
        return f"guard:session:{session}"

    def check(
        self, *, account: str, ip: str, session: str, now: float, reset_since: float | None = None
    ) -> Allowance:
        """May a proof be tried now? ``reset_since``: the account's last operator reset."""
        if self.limits.count(self._session(session)) >= self.session_max_failures:
            return Allowance(allowed=False, retry_after=int(ACCOUNT_POLICY.max_delay))
        answers = (
            self._account.policy.check(self._account.get(account, now, reset_since), now),
            self._account_ip.policy.check(
                self._account_ip.get(self._pair(account, ip), now, reset_since), now
            ),
        )
        refused = [a for a in answers if not a.allowed]
        # A lock answers like the longest back-off it is capped to (no oracle).
        return max(refused, key=lambda a: a.retry_after) if refused else _ALLOW

    def record_failure(
        self, *, account: str, ip: str, session: str, now: float, reset_since: float | None = None
    ) -> FailureOutcome:
        whole = self._account.fail(account, now, reset_since)
        pair = self._account_ip.fail(self._pair(account, ip), now, reset_since)
        count = self.limits.bump(self._session(session), ttl=SESSION_COUNT_TTL)
        return FailureOutcome(
            locked=whole.locked or pair.locked,
            session_exhausted=count >= self.session_max_failures,
        )

    def record_success(self, *, account: str, ip: str, session: str) -> None:
        self._account.clear(account)
        self._account_ip.clear(self._pair(account, ip))
        self.limits.forget(self._session(session))


