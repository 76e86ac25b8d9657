"""Confirm-code anti-phishing for the device grant (RFC 8628 §5.4, RFC 10027 §4).

Device-code phishing (RFC 10027 §3, "illicit consent grant"): an attacker
starts a login on *their* device and gets the victim to open the
``verification_uri_complete`` link or QR code and approve it. RFC 8628 §5.4
already asks every client to show the ``user_code`` on its screen; the
defence that needs nothing more from an unmodified client is to make the user
prove they are looking at that screen:

* A user who **typed** the code at ``verification_uri`` has just read it off
  the device: nothing more to ask.
* A user who **arrived by the link** (QR) must pick the device's code among
  :data:`CONFIRM_CODE_CHOICES` codes before the password is asked for. The
  decoys are drawn, with injected randomness, from the same alphabet and format
  as real codes, and the real code's position is uniform, so a victim who only
  has the link picks right with probability 1/3.
* :data:`CONFIRM_CODE_MAX_FAILURES` wrong picks end the session (DENIED).
  With three fixed choices a second try would double a blind guesser's odds
  (1/3 → 2/3), so one wrong pick is enough: an honest user who mis-taps
  starts again on the device.

The choices are drawn once, when the session starts, and stored with it, so
reloading the page shows the same three codes (fresh decoys on every load
would let anyone find the real code as the one that never changes).

This module only decides; the store keeps ``code_choices`` and
``confirm_failures``, and the approval service calls :func:`check_code_pick`
before any password work.
"""

from __future__ import annotations

import dataclasses
import hmac
from dataclasses import dataclass

from hatchway.errors import RemoteProtocolError
from hatchway.login.codes import new_user_code, normalize_user_code, uniform_index
from hatchway.login.states import LoginSession, SessionState, transition
from hatchway.runtime import Random

__all__ = [
    "CONFIRM_CODE_CHOICES",
    "CONFIRM_CODE_MAX_FAILURES",
    "CodePick",
    "check_code_pick",
    "needs_code_pick",
    "new_code_choices",
]

CONFIRM_CODE_CHOICES = 3
"""How many codes the QR page offers: the real one and two decoys."""

CONFIRM_CODE_MAX_FAILURES = 1
"""Wrong picks that end the session (see the module docstring for why one)."""


def new_code_choices(
    user_code: str, random: Random, *, count: int = CONFIRM_CODE_CHOICES
) -> tuple[str, ...]:
    """``user_code`` and ``count - 1`` distinct decoys, the real one at a uniform place."""
    if count < 2:
        raise ValueError("confirm-code needs at least one decoy")
    decoys: list[str] = []
    while len(decoys) < count - 1:
        decoy = new_user_code(random)
        if decoy != user_code and decoy not in decoys:
            decoys.append(decoy)
    decoys.insert(uniform_index(random, count), user_code)
    return tuple(decoys)


def needs_code_pick(session: LoginSession, *, typed: bool) -> bool:
    """Must this user pick the device's code before approving?"""
    return session.confirm_code and not typed


@dataclass(frozen=True, slots=True)
class CodePick:
    """The outcome of one pick: the session to store, and whether it was right."""

    session: LoginSession
    correct: bool


def check_code_pick(session: LoginSession, picked: str | None, *, now: float) -> CodePick:
    """Check the user's pick against the code the device shows (constant time).

    A missing, malformed or wrong pick counts as a failure; after
    :data:`CONFIRM_CODE_MAX_FAILURES` the session moves PENDING -> DENIED
    through the one transition table. A session without ``code_choices``
    needs no pick and is returned unchanged.
    """
    if not session.confirm_code:
        return CodePick(session, True)
    try:
        normalized = normalize_user_code(picked or "")
    except RemoteProtocolError:
        normalized = ""
    if hmac.compare_digest(normalized.encode(), session.user_code.encode()):
        return CodePick(session, True)
    failures = session.confirm_failures + 1
    counted = dataclasses.replace(session, confirm_failures=failures)
    if failures >= CONFIRM_CODE_MAX_FAILURES and session.state is SessionState.PENDING:
        counted = dataclasses.replace(transition(counted, SessionState.DENIED), decided_at=now)
    return CodePick(counted, False)
