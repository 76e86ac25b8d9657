"""The software secure element: a GP Security Domain subset plus the hatchway applet.

Card-OS behaviour follows ISO/IEC 7816-3 §8 (ATR) and 7816-4 §5 (APDU cases,
command chaining, ``61xx``/GET RESPONSE, basic logical channel only), the Security
Domain follows GP Card Spec v2.3.1 §11 (SELECT, GET DATA) and Amendment F (SCP11:
GET DATA ``BF21``, PERFORM SECURITY OPERATION, MUTUAL/INTERNAL AUTHENTICATE), and
the channel is SCP03 secure messaging (Amendment D §6.2). GET DATA also answers the
discovery objects a GP host reads first: Key Information Template ``00E0`` (§11.3.3.1),
CPLC ``9F7F`` and Card Data ``0066`` (§H.2), built in ``gpdata``. The entry point is
``SoftCard.transmit(apdu) -> rapdu``, the in-process transport; vpcd and PC/SC
adapters wrap the same call.

The origin ("specific data" of US 10,812,467 B2) reaches the card as a proprietary
command, SET ORIGIN (CLA ``80`` INS ``1E``, data = the origin as the bridge read it
from the WebSocket ``Origin`` header), and not as a Python method, because:

* the card, not the bridge, must hash and compare it, and a real card behind PC/SC
  or vpcd can only be told things in APDUs — a method would make the emulator
  accept an input no real card could;
* it is write-once per card session (power-on or reset), accepted only before any
  handshake and never inside a channel, so a page that relays APDUs cannot replace
  the bridge's value; the bridge sends it first and must also drop any page APDU
  with CLA ``80`` INS ``1E`` (defence in depth; the write-once rule alone holds).

``SoftCard.set_origin`` is only a convenience that sends that APDU.

Secure channel rules: a command with the secure-messaging CLA bit is unwrapped by
the open channel; a failed C-MAC closes it for good and answers 6982, as does any
later protected command. A plain command other than SELECT or a new handshake
while a channel is open also ends the channel (GP Card Spec §10.2.3: the
session's security level may not silently drop).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.serialization import Encoding

from hatchway.errors import InvalidMessage, LocalProtocolError
from hatchway.runtime import Clock, Random

from . import tlv
from .apdu import (
    EXTENDED_MAX_NE,
    SHORT_MAX_NE,
    ChainAssembler,
    CommandApdu,
    ResponseApdu,
    ResponseQueue,
    status,
)
from .appcert import origin_identity
from .applet import HatchwayApplet
from .cardstate import CardState, CardStateFile
from .constants import CLA, CLA_CHANNEL_MASK, INS, SW, ScpKid, Tag
from .errors import ApduError, MalformedApdu, MalformedTlv
from .gpdata import (
    DataTag,
    card_recognition_data,
    encode_key_information,
    sd_cplc,
    sd_key_information,
)
from .scp11_card import Scp11Responder
from .securemsg import CardSecureChannel

#: The GP Issuer Security Domain AID (GP Card Spec §H.1).
SD_AID = bytes.fromhex("A000000151000000")
_HISTORICAL = b"hatchway"
_ALLOWED_CLA_BITS = 0x80 | 0x10 | 0x04 | CLA_CHANNEL_MASK
_HANDSHAKE = {INS.PERFORM_SECURITY_OPERATION, INS.MUTUAL_AUTHENTICATE, INS.INTERNAL_AUTHENTICATE}
#: GET DATA objects a GP host reads to discover the card (GP Card Spec §11.3.3.1, §H.2).
_DISCOVERY = {DataTag.KEY_INFORMATION_TEMPLATE, DataTag.CPLC, DataTag.CARD_DATA}


def build_atr(historical: bytes = _HISTORICAL) -> bytes:
    """TS=3B (direct), T0 announces TD1 and the historical bytes, T=0 then T=1, TCK.

    ISO 7816-3 §8.2: with T=1 offered, TCK (XOR of T0..last byte) is mandatory.
    """
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes([0x80 | len(historical), 0x80, 0x01]) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


class SoftCard:
    """An emulated card. Not thread-safe: a reader serialises APDUs anyway."""

    def __init__(
        self,
        state: CardState,
        *,
        clock: Clock,
        random: Random,
        storage: CardStateFile | None = None,
    ) -> None:
        self._state = state
        self._storage = storage
        self.atr = build_atr()
        self._responder = Scp11Responder(
            sd_key=state.sd_key,
            sd_kvn=state.sd_kvn,
            trust_anchor=state.trust_anchor,
            ca_kvn=state.ca_kvn,
            clock=clock,
            random=random,
        )
        self._applet = HatchwayApplet(lambda: self._state, self._save)
        self._powered = False
        self._reset_session()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, clock: Clock, random: Random
    ) -> SoftCard:
        storage = CardStateFile(path)
        return cls(storage.load(), clock=clock, random=random, storage=storage)

    @property
    def state(self) -> CardState:
        return self._state

    def _save(self, state: CardState) -> None:
        if self._storage is not None:
            self._storage.save(state)
        self._state = state

    def _reset_session(self) -> None:
        self._selected = SD_AID
        self._origin: bytes | None = None
        self._channel: CardSecureChannel | None = None
        self._chain = ChainAssembler()
        self._queue = ResponseQueue()
        self._responder.reset()

    def power_on(self) -> bytes:
        self._powered = True
        self._reset_session()
        return self.atr

    def reset(self) -> bytes:
        """Warm reset: volatile session state is lost, persistent state is kept."""
        return self.power_on()

    def power_off(self) -> None:
        self._powered = False
        self._reset_session()

    @property
    def channel_open(self) -> bool:
        return self._channel is not None

    def set_origin(self, origin: str) -> None:
        """Send SET ORIGIN; raise ``ApduError`` if the card refuses it."""
        cmd = CommandApdu(CLA.PROPRIETARY, INS.SET_ORIGIN, 0, 0, origin.encode("utf-8"))
        ResponseApdu.parse(self.transmit(cmd.encode())).check()

    def transmit(self, apdu: bytes) -> bytes:
        if not self._powered:
            raise LocalProtocolError("the card is not powered")
        return self._process(apdu).encode()

    # --- ISO 7816-4 transport layer -------------------------------------------------

    def _process(self, raw: bytes) -> ResponseApdu:
        try:
            cmd = CommandApdu.parse(raw)
        except MalformedApdu:
            self._chain.abort()
            self._queue.clear()
            return status(SW.WRONG_LENGTH)
        if cmd.cla & ~_ALLOWED_CLA_BITS & 0xFF or cmd.cla == 0xFF:
            return status(SW.CLA_NOT_SUPPORTED)
        if cmd.cla & CLA_CHANNEL_MASK:
            return status(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        limit = EXTENDED_MAX_NE if cmd.extended else SHORT_MAX_NE
        if cmd.ins == INS.GET_RESPONSE and cmd.cla == 0 and not self._chain.pending:
            return self._queue.next(min(cmd.le or SHORT_MAX_NE, limit))
        self._queue.clear()
        try:
            whole = self._chain.feed(cmd)
        except ApduError as refused:
            return status(refused.sw)
        if whole is None:
            return status(SW.OK)
        return self._queue.start(self._dispatch(whole), limit)

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None

    def _dispatch(self, cmd: CommandApdu) -> ResponseApdu:
        channel = self._channel
        if cmd.cla & CLA.SECURE_MESSAGING:
            if channel is None:
                return status(SW.SECURITY_STATUS_NOT_SATISFIED)
            try:
                inner = channel.unwrap_command(cmd)
            except InvalidMessage:
                self._close_channel()
                return status(SW.SECURITY_STATUS_NOT_SATISFIED)
            response = self._execute(inner, channel)
            return channel.wrap_response(response)
        if channel is not None:
            self._close_channel()
            if not (cmd.ins == INS.SELECT or cmd.ins in _HANDSHAKE):
                return status(SW.SECURITY_STATUS_NOT_SATISFIED)
        return self._execute(cmd, None)

    # --- Security Domain and applet ---------------------------------------------------

    def _execute(self, cmd: CommandApdu, channel: CardSecureChannel | None) -> ResponseApdu:
        if cmd.ins == INS.SELECT and cmd.cla == 0 and channel is None:
            return self._select(cmd)
        if cmd.ins == INS.GET_DATA and cmd.cla in (0x00, CLA.PROPRIETARY):
            return self._get_data(cmd)
        if cmd.cla != CLA.PROPRIETARY:
            return status(SW.INS_NOT_SUPPORTED)
        if cmd.ins == INS.SET_ORIGIN or cmd.ins in _HANDSHAKE:
            if channel is not None:
                return status(SW.CONDITIONS_NOT_SATISFIED)
            return self._security_domain(cmd)
        if self._selected == self._applet.aid:
            return self._applet.process(cmd, channel)
        return status(SW.INS_NOT_SUPPORTED)

    def _select(self, cmd: CommandApdu) -> ResponseApdu:
        if cmd.p1 != 0x04 or cmd.p2 not in (0x00, 0x0C):
            return status(SW.INCORRECT_P1P2)
        aid = cmd.data or SD_AID
        if aid not in (SD_AID, self._applet.aid):
            return status(SW.FILE_NOT_FOUND)
        self._selected = aid
        self._responder.reset()
        if cmd.p2 == 0x0C:
            return status(SW.OK)
        proprietary = tlv.encode(Tag.MAX_BLOCK_LENGTH, b"\xff")
        fci = tlv.encode(
            Tag.FCI, tlv.encode(Tag.DF_NAME, aid) + tlv.encode(Tag.FCI_PROPRIETARY, proprietary)
        )
        return ResponseApdu(fci, SW.OK)

    def _get_data(self, cmd: CommandApdu) -> ResponseApdu:
        # The applet forwards GET DATA to its Security Domain, so a host can read the
        # card certificate without re-selecting the SD (one round trip less).
        tag = cmd.p1 << 8 | cmd.p2
        if tag in _DISCOVERY:
            if cmd.data:
                return status(SW.WRONG_DATA)
            return ResponseApdu(self._discovery(tag, wrapped=cmd.cla == CLA.PROPRIETARY), SW.OK)
        if tag != Tag.CERTIFICATE_STORE:
            return status(SW.REFERENCE_DATA_NOT_FOUND)
        if cmd.data:
            try:
                crt = tlv.parse_exact(cmd.data)
                ref = tlv.find(crt.children(), Tag.KEY_REFERENCE).value
            except MalformedTlv:
                return status(SW.WRONG_DATA)
            if crt.tag != Tag.CONTROL_REFERENCE_TEMPLATE or len(ref) != 2:
                return status(SW.WRONG_DATA)
            kids = (ScpKid.SCP11A, ScpKid.SCP11B, ScpKid.SCP11C)
            if ref[0] not in kids or ref[1] != self._state.sd_kvn:
                return status(SW.REFERENCE_DATA_NOT_FOUND)
        return ResponseApdu(self._state.sd_certificate.public_bytes(Encoding.DER), SW.OK)

    def _discovery(self, tag: int, *, wrapped: bool) -> bytes:
        """Key information, CPLC, Card Data (``gpdata.objects``; the class byte picks
        the GP or the interindustry convention for the templates)."""
        state = self._state
        if tag == DataTag.KEY_INFORMATION_TEMPLATE:
            return encode_key_information(sd_key_information(state.sd_kvn, state.ca_kvn),
                                          wrapped=wrapped)
        if tag == DataTag.CPLC:
            return sd_cplc(state.serial, state.sd_certificate.not_valid_before_utc.date())
        return card_recognition_data(wrapped=wrapped)

    def _security_domain(self, cmd: CommandApdu) -> ResponseApdu:
        if cmd.ins == INS.SET_ORIGIN:
            return self._set_origin(cmd)
        if cmd.ins == INS.PERFORM_SECURITY_OPERATION:
            return self._responder.perform_security_operation(cmd, self._origin)
        response, channel = self._responder.authenticate(cmd)
        self._channel = channel
        return response

    def _set_origin(self, cmd: CommandApdu) -> ResponseApdu:
        if cmd.p1 or cmd.p2:
            return status(SW.INCORRECT_P1P2)
        if self._origin is not None:
            return status(SW.CONDITIONS_NOT_SATISFIED)
        try:
            self._origin = origin_identity(cmd.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return status(SW.WRONG_DATA)
        return status(SW.OK)
