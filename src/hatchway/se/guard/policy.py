"""The bridge's APDU allow-list: which page APDUs may reach the card at all.

ISO/IEC 7816-4:2020 §5.1 (command APDU cases, parsed strictly by ``se.apdu``) and
§5.4.1 (CLA: chaining bit ``10``, secure-messaging bit ``04``, logical channel bits
``03``); GP Card Spec v2.3.1 §11.5 (SELECT) and §11.3 (GET DATA); Amendment F §7
(PERFORM SECURITY OPERATION, MUTUAL / INTERNAL AUTHENTICATE).

Why an allow-list: with ``--pcsc`` the bridge faces a real card that may also hold
PIV, OpenPGP, FIDO or payment applets. Any page on an allowed origin, or a script
injected into one, writes the APDUs the bridge relays; a deny-list would let it
SELECT PIV and exhaust its PIN, or send PUT KEY to the Security Domain. So the
bridge relays only what hatchway's flow (``flows/sechannel.py``) and a standard GP
SCP11 host send, on the basic logical channel:

===========================  ===========  =====  ==============================
command                      CLA          INS    P1 P2 / data
===========================  ===========  =====  ==============================
SELECT by DF name            00           A4     04 00 or 04 0C; data = an
                                                 allowed AID, exactly
GET RESPONSE                 00           C0     00 00
GET DATA                     00, 80       CA     BF21 (certificate store),
                                                 00E0 (key information)
PERFORM SECURITY OPERATION   80, 90       2A     any (the OCE certificates)
MUTUAL AUTHENTICATE          80, 90       82     any
INTERNAL AUTHENTICATE        80, 90       88     any
hatchway applet, wrapped     84, 94       42 44 46 48 4A   any (SCP03 C-MAC)
===========================  ===========  =====  ==============================

Per card session (``SessionGuard``) one more rule: until a SELECT of an allowed AID
has succeeded, nothing but that SELECT passes. After its reset a real card has some
applet selected by default (a payment or PIV applet, say), and a GET DATA or
AUTHENTICATE sent before the SELECT would reach it.

The allowed AIDs are the hatchway applet's plus the operator's ``--allow-aid``;
``--allow-ins INS[/P1P2]`` adds a command on class 00/80 with any chaining or SM
bits. Nothing else passes: no other AID (so a page cannot even learn which applets
the card holds), no logical channel but 0, no MANAGE CHANNEL, no plain applet
commands, no SET ORIGIN (the bridge's own, CLA 80 INS 1E).

Refusals are answered by the bridge, never by the card: ``6986`` for SET ORIGIN (as
before this allow-list existed), ``6700`` for bytes that are not one APDU (what the
card itself would answer), ``6985`` CONDITIONS_NOT_SATISFIED for an allowed command
before the SELECT (it would be allowed later), and ``6982`` SECURITY_STATUS_NOT_SATISFIED
for everything else. 6982 because ISO 7816-4 §5.6 gives it for a command whose access conditions
are not met, which is what the allow-list is; ``6D00``/``6A81`` would claim the card
lacks a function it may well have, and ``6A82`` would imply the bridge looked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from ..apdu import CommandApdu
from ..applet import HATCHWAY_AID, AppletIns
from ..constants import CLA, INS, SW, Tag
from ..errors import MalformedApdu

#: ISO/IEC 7816-5 §5.2: an AID is a 5-byte RID plus at most 11 bytes of PIX.
MIN_AID, MAX_AID = 5, 16
#: GET DATA ``00E0``: Key Information Template (GP Card Spec v2.3.1 §11.3.3.1).
KEY_INFORMATION = 0x00E0
_GP = CLA.PROPRIETARY
_SM = CLA.SECURE_MESSAGING
_CHAIN = CLA.CHAINING
#: CLA bits a relayed command may carry on top of class 00 or 80.
_FLAG_BITS = int(_SM | _CHAIN)
#: INS the operator may not add with --allow-ins: they have rules of their own.
_RESERVED_INS: dict[int, str] = {
    INS.SELECT: "use --allow-aid",
    INS.SET_ORIGIN: "the bridge's own command",
}


class Refusal(Enum):
    """Why the bridge answered an APDU itself; each maps to one status word."""

    MALFORMED = "not one well-formed command APDU"
    SET_ORIGIN = "SET ORIGIN comes from the bridge only"
    CLASS = "class byte not allowed (logical channel other than 0, or unknown class)"
    AID = "SELECT of an AID that is not allowed"
    COMMAND = "command not on the allow-list"
    NOT_SELECTED = "no allowed applet selected yet in this card session"

    @property
    def sw(self) -> SW:
        if self is Refusal.MALFORMED:
            return SW.WRONG_LENGTH
        if self is Refusal.SET_ORIGIN:
            return SW.COMMAND_NOT_ALLOWED
        if self is Refusal.NOT_SELECTED:
            return SW.CONDITIONS_NOT_SATISFIED
        return SW.SECURITY_STATUS_NOT_SATISFIED


@dataclass(frozen=True, slots=True)
class Rule:
    """One allowed command: its INS, the whole CLA bytes it may use, its P1P2s."""

    ins: int
    classes: frozenset[int]
    #: ``None``: any P1 P2.
    p1p2: frozenset[int] | None = None

    def matches(self, cmd: CommandApdu) -> bool:
        return (cmd.ins == self.ins and cmd.cla in self.classes
                and (self.p1p2 is None or (cmd.p1 << 8 | cmd.p2) in self.p1p2))


def _classes(*values: int) -> frozenset[int]:
    return frozenset(int(v) for v in values)


#: What the server's flow and a GP SCP11 host send besides SELECT (module docstring).
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(INS.GET_RESPONSE, _classes(0x00), frozenset({0x0000})),
    Rule(INS.GET_DATA, _classes(0x00, _GP), frozenset({int(Tag.CERTIFICATE_STORE),
                                                       KEY_INFORMATION})),
    Rule(INS.PERFORM_SECURITY_OPERATION, _classes(_GP, _GP | _CHAIN)),
    Rule(INS.MUTUAL_AUTHENTICATE, _classes(_GP, _GP | _CHAIN)),
    Rule(INS.INTERNAL_AUTHENTICATE, _classes(_GP, _GP | _CHAIN)),
    *(Rule(ins, _classes(_GP | _SM, _GP | _SM | _CHAIN)) for ins in AppletIns),
)
#: Class bytes an operator's --allow-ins rule covers: 00 or 80, any SM/chaining bits.
_ANY_CLASS = frozenset(base | flags for base in (0x00, int(_GP))
                       for flags in (0, int(_SM), int(_CHAIN), _FLAG_BITS))


def parse_aid(text: str) -> bytes:
    """``--allow-aid HEX`` → the AID bytes (5..16 bytes, ISO/IEC 7816-5)."""
    try:
        aid = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hex") from None
    if not MIN_AID <= len(aid) <= MAX_AID:
        raise ValueError(f"an AID is {MIN_AID}..{MAX_AID} bytes, not {len(aid)}")
    return aid


_INS_RULE = re.compile(r"(?P<ins>[0-9A-Fa-f]{2})(?:/(?P<p1p2>[0-9A-Fa-f]{4}))?")


def parse_ins_rule(text: str) -> Rule:
    """``--allow-ins INS[/P1P2]`` (hex, e.g. ``CA/9F7F``) → a rule for class 00/80."""
    match = _INS_RULE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not INS or INS/P1P2 in hex (e.g. CA/9F7F)")
    ins = int(match["ins"], 16)
    if ins in _RESERVED_INS:
        raise ValueError(f"INS {ins:02X} cannot be allowed this way: {_RESERVED_INS[ins]}")
    p1p2 = match["p1p2"]
    return Rule(ins, _ANY_CLASS, None if p1p2 is None else frozenset({int(p1p2, 16)}))


@dataclass(frozen=True, slots=True)
class ApduPolicy:
    """The allow-list; ``check`` is pure, so the bridge and tests share it."""

    aids: frozenset[bytes] = frozenset({HATCHWAY_AID})
    rules: tuple[Rule, ...] = DEFAULT_RULES
    extra: tuple[Rule, ...] = field(default=())

    @classmethod
    def with_operator_rules(cls, aids: Iterable[bytes] = (),
                            rules: Iterable[Rule] = ()) -> ApduPolicy:
        return cls(aids=frozenset({HATCHWAY_AID, *aids}), extra=tuple(rules))

    def check(self, apdu: bytes) -> Refusal | None:
        """``None`` if ``apdu`` may reach the card, else why it may not."""
        # SET ORIGIN first, on the raw header: whatever else is wrong with such an
        # APDU, the page tried to name the origin, and that is what the log must say.
        if len(apdu) >= 2 and apdu[0] & CLA.PROPRIETARY and apdu[1] == INS.SET_ORIGIN:
            return Refusal.SET_ORIGIN
        try:
            cmd = CommandApdu.parse(apdu)
        except MalformedApdu:
            return Refusal.MALFORMED
        if cmd.cla & ~_FLAG_BITS not in (0x00, _GP):
            return Refusal.CLASS
        if cmd.ins == INS.SELECT:
            return self._check_select(cmd)
        if any(rule.matches(cmd) for rule in (*self.rules, *self.extra)):
            return None
        return Refusal.COMMAND

    def _check_select(self, cmd: CommandApdu) -> Refusal | None:
        if cmd.cla != 0x00 or cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C):
            return Refusal.COMMAND
        # An empty SELECT selects the card's default (the ISD): not an allowed AID.
        return None if cmd.data in self.aids else Refusal.AID


def _selected(response: bytes) -> bool:
    """A SELECT answered 9000 or a 62xx/63xx warning selected (ISO 7816-4 §5.6)."""
    return response[-2:] == b"\x90\x00" or (len(response) >= 2 and response[-2] in (0x62, 0x63))


@dataclass(slots=True)
class SessionGuard:
    """``ApduPolicy`` for one card session (from its reset): the selection rule on top."""

    policy: ApduPolicy
    selected: bool = False

    def check(self, apdu: bytes) -> Refusal | None:
        refusal = self.policy.check(apdu)
        if refusal is None and not self.selected and apdu[1] != INS.SELECT:
            return Refusal.NOT_SELECTED
        return refusal

    def record(self, apdu: bytes, response: bytes) -> None:
        """The card's whole answer to a relayed ``apdu``. A failed SELECT may leave the
        card's previous selection in place or not; either way, assume nothing."""
        if apdu[1] == INS.SELECT:
            self.selected = _selected(response)


def describe(apdu: bytes) -> str:
    """A short, log-safe name for an APDU: ``80D8 PUT_KEY``, ``00A4 SELECT A0000003…``."""
    if len(apdu) < 2:
        return apdu.hex()
    head = apdu[:2].hex().upper()
    try:
        name = INS(apdu[1]).name
    except ValueError:
        name = AppletIns(apdu[1]).name if apdu[1] in set(AppletIns) else ""
    if apdu[1] == INS.SELECT and len(apdu) > 5:
        name += " " + apdu[5:5 + MAX_AID].hex().upper()
    return f"{head} {name}".strip()
