"""The hatchway applet: a provisioned secret, a counter and a signing key.

Commands use the proprietary class ``80`` (ISO/IEC 7816-4 §5.4.1) and are only
accepted when they arrive through the SCP11 secure channel of the Security Domain
the applet is associated with (GP Card Spec v2.3.1 §10.2, "Secure Channel"
interface), at the full C-MAC/C-DEC/R-MAC/R-ENC level.

Secrets go only to a channel whose OCE was authenticated by an origin-bound
certificate (SCP11a/c). An SCP11b channel is encrypted but anonymous — a phishing
page could open one — so it may read the counter and the public key, nothing else.

==================  ====  ===================================  ====================
command             INS   data → response                       needs
==================  ====  ===================================  ====================
STORE SECRET        42    secret (1..1024) → —                  SCP11a/c channel
READ SECRET         44    — → secret (6A88 if none)             SCP11a/c channel
READ COUNTER        46    — → counter (4 bytes, big endian)     any secure channel
SIGN CHALLENGE      48    challenge (16..64) → counter || sig   SCP11a/c channel
GET PUBLIC KEY      4A    — → uncompressed P-256 point          any secure channel
==================  ====  ===================================  ====================

SIGN CHALLENGE increments the counter first and signs, with ECDSA P-256/SHA-256
(RFC 6979 deterministic nonces, so no hidden randomness), the message
``"hatchway-se/sign" 00 || counter || challenge``; the counter makes every
signature unique and lets the server detect a cloned or rolled-back card.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum, unique

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .apdu import CommandApdu, ResponseApdu, status
from .cardstate import MAX_SECRET_LENGTH, CardState
from .constants import CLA, SW
from .scp11_card import encode_point
from .securemsg import CardSecureChannel

#: Proprietary AID: ``F0`` (unregistered RID space, ISO/IEC 7816-5) + "hatchway" + v1.
HATCHWAY_AID = bytes([0xF0]) + b"hatchway" + bytes([0x01])
SIGN_DOMAIN = b"hatchway-se/sign\x00"
MIN_CHALLENGE = 16
MAX_CHALLENGE = 64
MAX_COUNTER = 0xFFFFFFFF


@unique
class AppletIns(IntEnum):
    STORE_SECRET = 0x42
    READ_SECRET = 0x44
    READ_COUNTER = 0x46
    SIGN_CHALLENGE = 0x48
    GET_PUBLIC_KEY = 0x4A


_NEEDS_OCE = {AppletIns.STORE_SECRET, AppletIns.READ_SECRET, AppletIns.SIGN_CHALLENGE}


def sign_message(counter: int, challenge: bytes) -> bytes:
    return SIGN_DOMAIN + counter.to_bytes(4, "big") + challenge


class HatchwayApplet:
    """Processes unwrapped applet commands; card state is read and written via callbacks."""

    aid = HATCHWAY_AID

    def __init__(self, load: Callable[[], CardState], store: Callable[[CardState], None]):
        self._load = load
        self._store = store

    def process(self, cmd: CommandApdu, channel: CardSecureChannel | None) -> ResponseApdu:
        if cmd.cla != CLA.PROPRIETARY:
            return status(SW.CLA_NOT_SUPPORTED)
        try:
            ins = AppletIns(cmd.ins)
        except ValueError:
            return status(SW.INS_NOT_SUPPORTED)
        if channel is None or (ins in _NEEDS_OCE and not channel.oce_authenticated):
            return status(SW.SECURITY_STATUS_NOT_SATISFIED)
        if cmd.p1 or cmd.p2:
            return status(SW.INCORRECT_P1P2)
        state = self._load()
        if ins is AppletIns.STORE_SECRET:
            if not 0 < len(cmd.data) <= MAX_SECRET_LENGTH:
                return status(SW.WRONG_LENGTH)
            self._store(state.with_secret(cmd.data))
            return status(SW.OK)
        if cmd.data and ins is not AppletIns.SIGN_CHALLENGE:
            return status(SW.WRONG_LENGTH)
        if ins is AppletIns.READ_SECRET:
            if state.secret is None:
                return status(SW.REFERENCE_DATA_NOT_FOUND)
            return ResponseApdu(state.secret, SW.OK)
        if ins is AppletIns.READ_COUNTER:
            return ResponseApdu(state.counter.to_bytes(4, "big"), SW.OK)
        if ins is AppletIns.GET_PUBLIC_KEY:
            return ResponseApdu(encode_point(state.applet_key.public_key()), SW.OK)
        return self._sign(state, cmd.data)

    def _sign(self, state: CardState, challenge: bytes) -> ResponseApdu:
        if not MIN_CHALLENGE <= len(challenge) <= MAX_CHALLENGE:
            return status(SW.WRONG_LENGTH)
        if state.counter >= MAX_COUNTER:
            return status(SW.CONDITIONS_NOT_SATISFIED)
        counter = state.counter + 1
        # Persist the new counter before releasing the signature: a crash in between
        # must skip a value rather than reuse one.
        self._store(state.with_counter(counter))
        signature = state.applet_key.sign(
            sign_message(counter, challenge),
            ec.ECDSA(hashes.SHA256(), deterministic_signing=True),
        )
        return ResponseApdu(counter.to_bytes(4, "big") + signature, SW.OK)
