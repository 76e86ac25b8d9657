"""SCP11 on the card: PERFORM SECURITY OPERATION and MUTUAL/INTERNAL AUTHENTICATE.

Implements GP Card Spec v2.3 Amendment F v1.4 §7.5 (PERFORM SECURITY OPERATION:
one X.509 certificate per command, leaf last, P2 bit 8 = more follow), §7.6
(MUTUAL AUTHENTICATE for SCP11a/c, INTERNAL AUTHENTICATE for SCP11b; command data
= CRT ``A6`` {``90`` SCP id+params, ``95`` key usage, ``80`` key type, ``81`` key
length} || ``5F49`` ePK.OCE; response = ``5F49`` ePK.SD || ``86`` receipt) and the
key agreement of §3.1.2 / §6.5:

* ShSee = ECKA(eSK.SD, ePK.OCE);
* ShSes = ECKA(SK.SD, PK.OCE) for SCP11a/c (PK.OCE from the verified certificate),
  ECKA(SK.SD, ePK.OCE) for SCP11b (no OCE authentication);
* keys = X9.63-KDF(ShSee || ShSes, SharedInfo = 95 || 80 || 81 values);
* receipt = AES-CMAC(receipt key, command data || ``5F49`` ePK.SD TLV), which also
  seeds the MAC chaining value of the channel.

This module is sans-I/O: the emulator hands it parsed commands and gets responses
(and, on success, a ``CardSecureChannel``) back. Status words on refusal are listed
in ``appcert`` (certificate checks) and below (protocol checks).

============================================  ===================================
protocol condition                            status word
============================================  ===================================
no origin handed over by the bridge yet       6986 COMMAND_NOT_ALLOWED
MUTUAL AUTHENTICATE without a verified chain  6986 COMMAND_NOT_ALLOWED
unknown key version / CA reference            6A88 REFERENCE_DATA_NOT_FOUND
KID does not fit the instruction              6A86 INCORRECT_P1P2
malformed CRT, unsupported level, bad point   6A80 WRONG_DATA
ePK.OCE seen before (replayed handshake)      6982 SECURITY_STATUS_NOT_SATISFIED
============================================  ===================================
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.runtime import Clock, Random

from . import tlv
from .apdu import CommandApdu, ResponseApdu, status
from .appcert import CertificateRejected, verify_oce_chain
from .constants import (
    INS,
    SCP11_ID,
    SESSION_KEY_LENGTH,
    SW,
    KeyType,
    KeyUsage,
    Scp11Params,
    ScpKid,
    Tag,
)
from .errors import MalformedTlv
from .kdf import derive_scp11_keys, ecka, p256_key_from_random, receipt
from .securemsg import CardSecureChannel

#: P2 bit 8 of PERFORM SECURITY OPERATION: more certificates of the chain follow.
PSO_MORE = 0x80
MAX_CHAIN_LENGTH = 4
#: How many ephemeral OCE keys the card remembers to refuse replays.
REPLAY_MEMORY = 1024

_PARAMS = {ScpKid.SCP11A: Scp11Params.SCP11A, ScpKid.SCP11B: Scp11Params.SCP11B,
           ScpKid.SCP11C: Scp11Params.SCP11C}


class HandshakeState(Enum):
    IDLE = "idle"
    RECEIVING_CHAIN = "receiving-chain"
    OCE_VERIFIED = "oce-verified"


def encode_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def decode_point(raw: bytes) -> ec.EllipticCurvePublicKey:
    """An uncompressed P-256 point, checked to be on the curve (``ValueError`` if not)."""
    if len(raw) != 65 or raw[0] != 0x04:
        raise ValueError("not an uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


@dataclass(frozen=True, slots=True)
class CrtParams:
    """What a MUTUAL/INTERNAL AUTHENTICATE asked for, validated."""

    params: int
    shared_info: bytes
    epk_oce: ec.EllipticCurvePublicKey


def parse_key_agreement(data: bytes, expected_params: int) -> CrtParams:
    """Strictly parse A6 {90 95 80 81} || 5F49; ``ValueError``/``MalformedTlv`` if not."""
    items = tlv.parse_all(data)
    if [item.tag for item in items] != [Tag.CONTROL_REFERENCE_TEMPLATE, Tag.EPHEMERAL_PUBLIC_KEY]:
        raise ValueError("expected CRT then ephemeral key")
    crt = items[0].children()
    tags = sorted(item.tag for item in crt)
    wanted = sorted((Tag.SCP_IDENTIFIER, Tag.KEY_USAGE, Tag.KEY_TYPE, Tag.KEY_LENGTH))
    if tags != wanted:
        raise ValueError("CRT must hold exactly tags 90, 95, 80, 81")
    if tlv.find(crt, Tag.SCP_IDENTIFIER).value != bytes((SCP11_ID, expected_params)):
        raise ValueError("SCP identifier/parameters do not match the key")
    usage = tlv.find(crt, Tag.KEY_USAGE).value
    key_type = tlv.find(crt, Tag.KEY_TYPE).value
    length = tlv.find(crt, Tag.KEY_LENGTH).value
    # Only the full security level with AES-128 is offered: an allow-list, not a menu.
    if (usage, key_type, length) != (
        bytes([KeyUsage.FULL]), bytes([KeyType.AES]), bytes([SESSION_KEY_LENGTH])
    ):
        raise ValueError("unsupported key usage, type or length")
    return CrtParams(expected_params, usage + key_type + length, decode_point(items[1].value))


class Scp11Responder:
    """The Security Domain's SCP11 key agreement, one card session at a time."""

    def __init__(
        self,
        *,
        sd_key: ec.EllipticCurvePrivateKey,
        sd_kvn: int,
        trust_anchor: x509.Certificate,
        ca_kvn: int,
        clock: Clock,
        random: Random,
    ) -> None:
        self._sd_key = sd_key
        self._sd_kvn = sd_kvn
        self._anchor = trust_anchor
        self._ca_kvn = ca_kvn
        self._clock = clock
        self._random = random
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        self.state = HandshakeState.IDLE
        self._chain: list[bytes] = []
        self._pk_oce: ec.EllipticCurvePublicKey | None = None

    def _refuse(self, sw: SW) -> ResponseApdu:
        self.reset()
        return status(sw)

    def perform_security_operation(
        self, cmd: CommandApdu, origin_identity: bytes | None
    ) -> ResponseApdu:
        kid, more = cmd.p2 & ~PSO_MORE & 0xFF, bool(cmd.p2 & PSO_MORE)
        if kid not in (0, ScpKid.CA_KLOC) or cmd.p1 not in (0, self._ca_kvn):
            return self._refuse(SW.REFERENCE_DATA_NOT_FOUND)
        if self.state is not HandshakeState.RECEIVING_CHAIN:
            self.reset()  # a first certificate always starts a fresh chain
        if not cmd.data or len(self._chain) >= MAX_CHAIN_LENGTH:
            return self._refuse(SW.WRONG_DATA)
        self._chain.append(cmd.data)
        if more:
            self.state = HandshakeState.RECEIVING_CHAIN
            return status(SW.OK)
        if origin_identity is None:
            return self._refuse(SW.COMMAND_NOT_ALLOWED)
        try:
            self._pk_oce = verify_oce_chain(
                self._chain, self._anchor, now=self._clock(), expected_identity=origin_identity
            )
        except CertificateRejected as rejected:
            return self._refuse(rejected.sw)
        self.state = HandshakeState.OCE_VERIFIED
        self._chain = []
        return status(SW.OK)

    def authenticate(self, cmd: CommandApdu) -> tuple[ResponseApdu, CardSecureChannel | None]:
        """MUTUAL (SCP11a/c) or INTERNAL (SCP11b) AUTHENTICATE."""
        pk_oce, verified = self._pk_oce, self.state is HandshakeState.OCE_VERIFIED
        self.reset()  # one verified chain buys exactly one key agreement
        if cmd.p1 != self._sd_kvn:
            return status(SW.REFERENCE_DATA_NOT_FOUND), None
        try:
            kid = ScpKid(cmd.p2)
        except ValueError:
            return status(SW.INCORRECT_P1P2), None
        mutual = cmd.ins == INS.MUTUAL_AUTHENTICATE
        if kid not in _PARAMS or (kid is ScpKid.SCP11B) == mutual:
            return status(SW.INCORRECT_P1P2), None
        if mutual and (not verified or pk_oce is None):
            return status(SW.COMMAND_NOT_ALLOWED), None
        try:
            crt = parse_key_agreement(cmd.data, _PARAMS[kid])
        except (ValueError, MalformedTlv):
            return status(SW.WRONG_DATA), None
        fingerprint = hashlib.sha256(encode_point(crt.epk_oce)).digest()
        if fingerprint in self._seen:
            return status(SW.SECURITY_STATUS_NOT_SATISFIED), None
        self._seen[fingerprint] = None
        if len(self._seen) > REPLAY_MEMORY:
            self._seen.popitem(last=False)

        esk_sd = p256_key_from_random(self._random)
        epk_sd_tlv = tlv.encode(Tag.EPHEMERAL_PUBLIC_KEY, encode_point(esk_sd.public_key()))
        sh_see = ecka(esk_sd, crt.epk_oce)
        sh_ses = ecka(self._sd_key, pk_oce if mutual and pk_oce is not None else crt.epk_oce)
        keys = derive_scp11_keys(sh_see, sh_ses, crt.shared_info)
        mac = receipt(keys.receipt_key, cmd.data + epk_sd_tlv)
        channel = CardSecureChannel(keys.session, mac, oce_authenticated=mutual)
        return ResponseApdu(epk_sd_tlv + tlv.encode(Tag.RECEIPT, mac), SW.OK), channel
