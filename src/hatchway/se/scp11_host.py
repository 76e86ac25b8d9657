"""SCP11 on the host (OCE) side, sans-I/O, batched for a relay.

Implements the OCE half of GP Card Spec v2.3 Amendment F v1.4: §7.4 GET DATA
``BF21`` (the SD's certificate store), §7.5 PERFORM SECURITY OPERATION (the OCE
chain, leaf last, P2 bit 8 on all but the last), §7.6 MUTUAL / INTERNAL
AUTHENTICATE and the key derivation of §3.1.2:

* ShSee = ECKA(eSK.OCE, ePK.SD); ShSes = ECKA(SK.OCE, PK.SD) for SCP11a/c, or
  ECKA(eSK.OCE, PK.SD) for SCP11b;
* receipt checked in constant time; it seeds the MAC chain of the channel.

No handshake command depends on an answer: the OCE chain and ePK.OCE are the
host's own, and PK.SD is needed only to check the card's answer. So the host emits
everything as one batch (``handshake_commands``) — GET DATA ``BF21`` first when it
was not given the card's certificates — and consumes the batch of answers
(``receive_responses``): one server→browser→card round trip in all. Sending PSO and
AUTHENTICATE before the card's certificate is checked reveals nothing (the OCE
certificate is public, ePK.OCE ephemeral); the card is authenticated when the
answers come back, by its certificate (``certprofile.verify_card_certificate``:
issued by ``trust_anchor`` under the secure-element profile) and by the receipt,
which only the holder of SK.SD.ECKA can compute. The host keeps no cache of card
certificates between handshakes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway.errors import InvalidMessage, LocalProtocolError
from hatchway.runtime import Random

from . import tlv
from .apdu import CommandApdu, ResponseApdu, Transmit, chain, transceive
from .appcert import load_der_strict
from .certprofile import UntrustedCard, verify_card_certificate
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
from .errors import ApduError, MalformedApdu, MalformedTlv
from .kdf import derive_scp11_keys, ecka, p256_key_from_random, receipt, scp11_shared_info
from .scp11_card import PSO_MORE, decode_point, encode_point
from .securemsg import SecureChannel

#: GP proprietary class byte for the SD's commands.
GP_CLA = 0x80


class Scp11Variant(Enum):
    """The three SCP11 variants, each with its key identifier and instruction."""

    A = ScpKid.SCP11A
    B = ScpKid.SCP11B
    C = ScpKid.SCP11C

    @property
    def kid(self) -> int:
        return int(self.value)

    @property
    def params(self) -> int:
        return int(Scp11Params[f"SCP11{self.name}"])

    @property
    def ins(self) -> int:
        return INS.INTERNAL_AUTHENTICATE if self is Scp11Variant.B else INS.MUTUAL_AUTHENTICATE

    @property
    def authenticates_oce(self) -> bool:
        return self is not Scp11Variant.B


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Key identifier and key version number (GP Card Spec §11.1.8)."""

    kid: int
    kvn: int

    def encode(self) -> bytes:
        return bytes((self.kid, self.kvn))


def get_certificate_store_command(key: KeyRef) -> CommandApdu:
    """GET DATA ``BF21`` for the SD key ``key`` (Amendment F §7.4.2)."""
    ref = tlv.encode(Tag.CONTROL_REFERENCE_TEMPLATE, tlv.encode(Tag.KEY_REFERENCE, key.encode()))
    return CommandApdu(GP_CLA, INS.GET_DATA, Tag.CERTIFICATE_STORE >> 8,
                       Tag.CERTIFICATE_STORE & 0xFF, ref, le=256)


def parse_certificate_store(data: bytes) -> list[x509.Certificate]:
    """The concatenated DER certificates of a ``BF21`` answer, leaf last."""
    certs = []
    for item in tlv.iter_tlvs(data):
        if item.tag != 0x30:
            raise MalformedTlv("certificate store holds something other than certificates")
        try:
            certs.append(load_der_strict(item.encode()))
        except ValueError:
            raise MalformedTlv("undecodable certificate in the store") from None
    if not certs:
        raise MalformedTlv("empty certificate store")
    return certs


class _InsecureSkip(Enum):
    INSECURE_SKIP_CARD_VERIFICATION = "insecure-skip-card-verification"


#: Pass as ``trust_anchor`` to accept *any* card key unverified. Only for known-answer
#: tests with the spec's bare keys; never in a deployment (anyone could pose as a card).
INSECURE_SKIP_CARD_VERIFICATION = _InsecureSkip.INSECURE_SKIP_CARD_VERIFICATION


class HostState(Enum):
    READY = "ready"
    AWAITING_RESPONSES = "awaiting-responses"
    OPEN = "open"
    FAILED = "failed"


_TRANSITIONS = {
    (HostState.READY, "commands"): HostState.AWAITING_RESPONSES,
    (HostState.AWAITING_RESPONSES, "responses"): HostState.OPEN,
}


class Scp11Host:
    """OCE side of one SCP11 handshake; yields an open ``SecureChannel``.

    ``trust_anchor`` is required: the card's leaf certificate must be issued by it
    under the secure-element profile (``certprofile``). ``card_certificates`` is the
    SD's store (leaf last) if already read; without it the host reads the store
    itself, in the same batch as the handshake.
    """

    def __init__(
        self,
        variant: Scp11Variant,
        *,
        trust_anchor: x509.Certificate | _InsecureSkip,
        random: Random,
        now: float,
        card_certificates: Sequence[x509.Certificate] | None = None,
        oce_chain: Sequence[x509.Certificate] = (),
        oce_key: ec.EllipticCurvePrivateKey | None = None,
        sd_kvn: int = 1,
        oce_ref: KeyRef = KeyRef(0, 0),
        short_apdus: bool = False,
    ) -> None:
        if variant.authenticates_oce and (oce_key is None or not oce_chain):
            raise LocalProtocolError(f"SCP11{variant.name} needs the OCE key and certificate chain")
        if not isinstance(trust_anchor, x509.Certificate | _InsecureSkip):
            raise LocalProtocolError("a trust anchor for the card's certificate is required")
        if card_certificates is not None and not card_certificates:
            raise LocalProtocolError("the card's certificate store is empty")
        self.variant = variant
        self._anchor = trust_anchor
        self._now = now
        self.card_certificates: list[x509.Certificate] = []
        self._pk_sd: ec.EllipticCurvePublicKey | None = None
        if card_certificates is not None:
            self._accept_card(list(card_certificates))
        self._oce_chain = list(oce_chain) if variant.authenticates_oce else []
        self._oce_key = oce_key
        self._random = random
        self._sd_ref = KeyRef(variant.kid, sd_kvn)
        self._oce_ref = oce_ref
        self._short = short_apdus
        self.state = HostState.READY
        self._sent: list[CommandApdu] = []
        self._esk: ec.EllipticCurvePrivateKey | None = None
        self._auth_data = b""

    def _accept_card(self, certs: list[x509.Certificate]) -> None:
        leaf = certs[-1]
        if isinstance(self._anchor, x509.Certificate):
            self._pk_sd = verify_card_certificate(leaf, self._anchor, self._now)
        else:
            key = leaf.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, ec.SECP256R1
            ):
                raise UntrustedCard("card key")
            self._pk_sd = key
        self.card_certificates = certs

    def _move(self, event: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"SCP11 host: {event} not allowed while {self.state.value}")
        self.state = nxt

    def handshake_commands(self) -> list[bytes]:
        """All handshake APDUs, in order: [GET DATA BF21,] PERFORM SECURITY
        OPERATION(s), then AUTHENTICATE."""
        self._move("commands")
        commands: list[CommandApdu] = []
        if self._pk_sd is None:
            commands.append(get_certificate_store_command(self._sd_ref))
        last = len(self._oce_chain) - 1
        for i, cert in enumerate(self._oce_chain):
            p2 = self._oce_ref.kid | (PSO_MORE if i < last else 0)
            der = cert.public_bytes(serialization.Encoding.DER)
            commands.append(CommandApdu(GP_CLA, INS.PERFORM_SECURITY_OPERATION,
                                        self._oce_ref.kvn, p2, der))
        self._esk = p256_key_from_random(self._random)
        crt = tlv.encode_many([
            (Tag.SCP_IDENTIFIER, bytes((SCP11_ID, self.variant.params))),
            (Tag.KEY_USAGE, bytes([KeyUsage.FULL])),
            (Tag.KEY_TYPE, bytes([KeyType.AES])),
            (Tag.KEY_LENGTH, bytes([SESSION_KEY_LENGTH])),
        ])
        self._auth_data = tlv.encode_many([
            (Tag.CONTROL_REFERENCE_TEMPLATE, crt),
            (Tag.EPHEMERAL_PUBLIC_KEY, encode_point(self._esk.public_key())),
        ])
        commands.append(CommandApdu(GP_CLA, self.variant.ins, self._sd_ref.kvn,
                                    self._sd_ref.kid, self._auth_data, le=256))
        self._sent = [link for cmd in commands for link in (chain(cmd) if self._short else [cmd])]
        return [cmd.encode() for cmd in self._sent]

    def receive_responses(self, responses: Sequence[bytes]) -> SecureChannel:
        """The card's answers to ``handshake_commands``, in order → open channel.

        Checked in this order: the card's certificate store (if the batch read it;
        any failure is the opaque ``UntrustedCard``), then the status words (a
        refusal raises ``ApduError`` naming the card's status word), then the
        receipt (the opaque ``InvalidMessage``).
        """
        self._move("responses")
        try:
            return self._finish(responses)
        except BaseException:
            self.state = HostState.FAILED
            self._esk = None
            raise

    def _finish(self, responses: Sequence[bytes]) -> SecureChannel:
        if len(responses) != len(self._sent):
            raise LocalProtocolError("one response per handshake command is required")
        parsed = [ResponseApdu.parse(raw) for raw in responses]
        if self._pk_sd is None:
            store, parsed = parsed[0], parsed[1:]
            try:
                self._accept_card(parse_certificate_store(store.check()))
            except (ApduError, MalformedTlv):
                raise UntrustedCard("card certificate store") from None
        for resp in parsed:
            if resp.sw != SW.OK:
                raise ApduError(resp.sw, resp.data)
        for resp in parsed[:-1]:
            if resp.data:
                raise MalformedApdu("unexpected data in a PERFORM SECURITY OPERATION answer")
        assert self._esk is not None  # noqa: S101 - set by handshake_commands
        try:
            items = tlv.parse_all(parsed[-1].data)
            if [i.tag for i in items] != [Tag.EPHEMERAL_PUBLIC_KEY, Tag.RECEIPT]:
                raise ValueError("unexpected authenticate answer")
            epk_sd = decode_point(items[0].value)
        except (ValueError, MalformedTlv):
            raise InvalidMessage("authenticate answer") from None
        static = self._oce_key if self.variant.authenticates_oce else self._esk
        assert static is not None and self._pk_sd is not None  # noqa: S101 - checked above
        keys = derive_scp11_keys(ecka(self._esk, epk_sd), ecka(static, self._pk_sd),
                                 scp11_shared_info())
        expected = receipt(keys.receipt_key, self._auth_data + items[0].encode())
        if not hmac.compare_digest(expected, items[1].value):
            raise InvalidMessage("receipt")
        self._esk = None
        return SecureChannel(keys.session, expected)

    def run(self, transmit: Transmit) -> SecureChannel:
        """Drive the handshake over one injected ``transmit`` callable."""
        answers: list[bytes] = []
        for command in self.handshake_commands():
            # Each command is already a whole link; transceive collects any 61xx.
            answer = transceive(transmit, CommandApdu.parse(command)).encode()
            answers.append(answer)
            if answer[-2:] != b"\x90\x00":
                break
        answers += [b"\x6f\x00"] * (len(self._sent) - len(answers))
        return self.receive_responses(answers)

