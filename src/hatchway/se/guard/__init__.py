"""What the secure-element bridge lets through to a card (``guard.policy``)."""

from __future__ import annotations

from .policy import (
    ApduPolicy,
    Refusal,
    Rule,
    SessionGuard,
    describe,
    parse_aid,
    parse_ins_rule,
)

__all__ = [
    "ApduPolicy",
    "Refusal",
    "Rule",
    "SessionGuard",
    "describe",
    "parse_aid",
    "parse_ins_rule",
]
