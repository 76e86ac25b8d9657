"""Password-attempt limits of the cross-device login, held in process memory.

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

Per-process state, like the token buckets: N replicas give an attacker N times
the budget; docs/login.md says so. Also here: :class:`UsedOnce`, which makes a
sealed SCRAM exchange token single-use for its lifetime.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

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


class _Table:
    """Bounded map of attempt states under one policy; least recently failed go first."""

    def __init__(self, policy: LockoutPolicy, max_entries: int) -> None:
        self.policy = policy
        self.max_entries = max_entries
        self._states: OrderedDict[str, AttemptState] = OrderedDict()

    def get(self, key: str, now: float, reset_since: float | None) -> AttemptState:
        state = self._states.get(key)
        if state is None:
            return AttemptState()
        if reset_since is not None and state.last_failure_at < reset_since:
            return AttemptState()
        return self.policy.current(state, now)

    def fail(self, key: str, now: float, reset_since: float | None) -> AttemptState:
        state = self.policy.record_failure(self.get(key, now, reset_since), now)
        self._states.pop(key, None)
        self._states[key] = state
        while len(self._states) > self.max_entries:
            self._states.popitem(last=False)
        return state

    def clear(self, key: str) -> None:
        self._states.pop(key, None)


class PasswordGuard:
    """Per-session, per-(account, IP) and per-account password-attempt limits."""

    def __init__(
        self, *, session_max_failures: int = SESSION_MAX_FAILURES, max_entries: int = 100_000
    ) -> None:
        self.session_max_failures = session_max_failures
        self._lock = threading.Lock()
        self._account = _Table(ACCOUNT_POLICY, max_entries)
        self._account_ip = _Table(ACCOUNT_IP_POLICY, max_entries)
        self._sessions: OrderedDict[str, int] = OrderedDict()
        self._max_entries = max_entries

    @staticmethod
    def _pair(account: str, ip: str) -> str:
        return f"{account}\x00{ip_key(ip)}"

    def check(
        self, *, account: str, ip: str, session: str, now: float, reset_since: float | None = None
    ) -> Allowance:
        """May a proof be tried now? ``reset_since``: the account's last operator reset."""
        with self._lock:
            if self._sessions.get(session, 0) >= self.session_max_failures:
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
        with self._lock:
            whole = self._account.fail(account, now, reset_since)
            pair = self._account_ip.fail(self._pair(account, ip), now, reset_since)
            count = self._sessions.pop(session, 0) + 1
            self._sessions[session] = count
            while len(self._sessions) > self._max_entries:
                self._sessions.popitem(last=False)
        return FailureOutcome(
            locked=whole.locked or pair.locked,
            session_exhausted=count >= self.session_max_failures,
        )

    def record_success(self, *, account: str, ip: str, session: str) -> None:
        with self._lock:
            self._account.clear(account)
            self._account_ip.clear(self._pair(account, ip))
            self._sessions.pop(session, None)


class UsedOnce:
    """Identifiers seen within their lifetime; a second :meth:`use` is refused.

    Bounded by construction: an entry lives only until its deadline, and the
    callers are rate limited. When the table is full of live entries it refuses
    new ones (fail closed) rather than forget one that could then be replayed.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def use(self, identifier: str, *, until: float, now: float) -> bool:
        """Record ``identifier`` as used until ``until``; False if it was used already."""
        with self._lock:
            while self._until and next(iter(self._until.values())) <= now:
                self._until.popitem(last=False)
            if identifier in self._until or len(self._until) >= self.max_entries:
                return False
            self._until[identifier] = until
            return True
