"""The Security Domain's discovery data objects, read by GET DATA before any channel.

* Key Information Template, P1P2 ``00E0`` (GP Card Spec v2.3.1 §11.3.3.1, key types of
  Table 11-16, ECC types of Amendment E): one Key Information Data object ``C0`` per
  key reference — key id, key version, then (key type, key length) pairs;
* Card Production Life Cycle data, ``9F7F`` (GP Card Spec v2.1.1 Annex, "CPLC"; 42
  bytes, dates ``YDDD`` in BCD);
* Card Data, ``0066``: Card Recognition Data ``73`` (GP Card Spec v2.3.1 §H.2): the GP
  recognition OID, GP version, card identification scheme and the SCP11 variants.

Two host conventions exist for the templates and both are real: GlobalPlatformPro
reads ``E0`` and ``66`` with their tags, as the GP GET DATA (class ``80``) returns them,
while yubikit and Yubico's SDKs send the interindustry GET DATA (class ``00``) and read
the *contents* (a list of ``C0``; one ``73``), as a YubiKey's Security Domain answers.
So ``wrapped`` follows the command's class; CPLC always carries its ``9F7F`` tag.

Pure builders and strict parsers (the parsers are for hosts and tests).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, unique

from .. import tlv
from ..constants import SCP11_ID, Scp11Params, ScpKid
from ..errors import MalformedTlv


@unique
class DataTag(IntEnum):
    """GET DATA P1P2 of the discovery objects, and the tags inside them."""

    KEY_INFORMATION_TEMPLATE = 0xE0
    KEY_INFORMATION_DATA = 0xC0
    CPLC = 0x9F7F
    CARD_DATA = 0x66
    CARD_RECOGNITION_DATA = 0x73
    OID = 0x06
    CARD_MANAGEMENT_TYPE = 0x60
    CARD_IDENTIFICATION_SCHEME = 0x63
    SECURE_CHANNEL_PROTOCOL = 0x64


@unique
class KeyComponent(IntEnum):
    """Key types of a Key Information Data object (GP Table 11-16, Amendment E)."""

    AES = 0x88
    ECC_PUBLIC_KEY = 0xB0
    ECC_PRIVATE_KEY = 0xB1
    #: "ECC key parameters": its length byte carries the curve reference.
    ECC_KEY_PARAMETERS = 0xF0


#: Curve reference of ``ECC_KEY_PARAMETERS`` (Amendment E: 00 = NIST P-256).
P256_REFERENCE = 0x00
P256_PRIVATE_LENGTH = 32
P256_PUBLIC_LENGTH = 65


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key reference and its components, ``((type, length), …)``."""

    kid: int
    kvn: int
    components: tuple[tuple[int, int], ...]

    def encode(self) -> bytes:
        body = bytes((self.kid, self.kvn)) + b"".join(bytes(c) for c in self.components)
        return tlv.encode(DataTag.KEY_INFORMATION_DATA, body)


def sd_key_information(sd_kvn: int, ca_kvn: int) -> list[KeyInfo]:
    """What the emulated SD really holds: SK.SD.ECKA (P-256), which it accepts under
    each SCP11 key id, and PK.CA-KLOC.ECDSA, the trust anchor for OCE certificates."""
    private = ((KeyComponent.ECC_PRIVATE_KEY, P256_PRIVATE_LENGTH),
               (KeyComponent.ECC_KEY_PARAMETERS, P256_REFERENCE))
    public = ((KeyComponent.ECC_PUBLIC_KEY, P256_PUBLIC_LENGTH),
              (KeyComponent.ECC_KEY_PARAMETERS, P256_REFERENCE))
    keys = [KeyInfo(int(kid), sd_kvn, private)
            for kid in (ScpKid.SCP11A, ScpKid.SCP11B, ScpKid.SCP11C)]
    return [*keys, KeyInfo(int(ScpKid.CA_KLOC), ca_kvn, public)]


def encode_key_information(keys: Iterable[KeyInfo], *, wrapped: bool) -> bytes:
    body = b"".join(key.encode() for key in keys)
    return tlv.encode(DataTag.KEY_INFORMATION_TEMPLATE, body) if wrapped else body


def parse_key_information(data: bytes) -> list[KeyInfo]:
    """Either convention (module docstring) → the key references, strictly."""
    items = tlv.parse_all(data)
    if [i.tag for i in items] == [DataTag.KEY_INFORMATION_TEMPLATE]:
        items = tlv.parse_all(items[0].value)
    keys = []
    for item in items:
        if item.tag != DataTag.KEY_INFORMATION_DATA or len(item.value) < 4 or (
            len(item.value) % 2
        ):
            raise MalformedTlv("not a Key Information Data object")
        v = item.value
        keys.append(KeyInfo(v[0], v[1], tuple(zip(v[2::2], v[3::2], strict=True))))
    return keys


# --- CPLC -------------------------------------------------------------------------

#: CPLC fields in order, with their byte lengths (42 in all).
CPLC_FIELDS: tuple[tuple[str, int], ...] = (
    ("ic_fabricator", 2), ("ic_type", 2), ("os_id", 2), ("os_release_date", 2),
    ("os_release_level", 2), ("ic_fabrication_date", 2), ("ic_serial_number", 4),
    ("ic_batch_identifier", 2), ("ic_module_fabricator", 2),
    ("ic_module_packaging_date", 2), ("icc_manufacturer", 2), ("ic_embedding_date", 2),
    ("ic_pre_personalizer", 2), ("ic_pre_perso_equipment_date", 2),
    ("ic_pre_perso_equipment_id", 4), ("ic_personalizer", 2), ("ic_personalization_date", 2),
    ("ic_perso_equipment_id", 4),
)
CPLC_LENGTH = sum(n for _, n in CPLC_FIELDS)


def cplc_date(day: dt.date) -> bytes:
    """``YDDD`` in BCD: the year's last digit and the day of the year."""
    text = f"{day.year % 10}{day.timetuple().tm_yday:03d}"
    return bytes.fromhex(text)


def encode_cplc(fields: dict[str, bytes]) -> bytes:
    """The ``9F7F`` object; a field not given is zeros ("not assigned")."""
    unknown = set(fields) - {name for name, _ in CPLC_FIELDS}
    if unknown:
        raise ValueError(f"unknown CPLC fields: {sorted(unknown)}")
    body = b""
    for name, length in CPLC_FIELDS:
        value = fields.get(name, bytes(length))
        if len(value) != length:
            raise ValueError(f"CPLC {name} is {length} bytes")
        body += value
    return tlv.encode(DataTag.CPLC, body)


def parse_cplc(data: bytes) -> dict[str, bytes]:
    body = tlv.unpack(DataTag.CPLC, data)
    if len(body) != CPLC_LENGTH:
        raise MalformedTlv(f"CPLC is {CPLC_LENGTH} bytes")
    out, pos = {}, 0
    for name, length in CPLC_FIELDS:
        out[name], pos = body[pos:pos + length], pos + length
    return out


def sd_cplc(serial: str, personalized: dt.date) -> bytes:
    """The emulator's CPLC: its serial and personalisation date; the manufacturer
    fields stay zero because an emulator has no registered fabricator or OS id."""
    raw = bytes.fromhex(serial)
    return encode_cplc({
        "ic_serial_number": raw[:4].rjust(4, b"\x00"),
        "ic_batch_identifier": raw[4:6].rjust(2, b"\x00"),
        "ic_personalization_date": cplc_date(personalized),
    })


# --- Card Recognition Data --------------------------------------------------------

#: {iso(1) member-body(2) us(840) globalPlatform(114283)}
GP_OID = "1.2.840.114283"
CARD_RECOGNITION_OID = f"{GP_OID}.1"
#: GP Card Spec v2.3.1.
GP_VERSION_OID = f"{GP_OID}.2.2.3.1"
CARD_IDENTIFICATION_OID = f"{GP_OID}.3"


def encode_oid(dotted: str) -> bytes:
    """DER content octets of an OBJECT IDENTIFIER (X.690 §8.19)."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"not an OID: {dotted}")
    out = b""
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return out


def _oid_object(tag: int, dotted: str) -> bytes:
    return tlv.encode(tag, tlv.encode(DataTag.OID, encode_oid(dotted)))


def card_recognition_data(variants: Sequence[int] = (Scp11Params.SCP11A, Scp11Params.SCP11B,
                                                    Scp11Params.SCP11C),
                          *, wrapped: bool) -> bytes:
    """``73`` (inside ``66`` when ``wrapped``): GP card, GP 2.3.1, and one ``64`` per
    SCP11 variant, ``{globalPlatform 4 scp i}`` where the ``scp`` and ``i`` arcs are the
    bytes of tag ``90`` (Amendment F §7.6.2.3), as SCP02 and SCP03 use ``02`` and ``03``."""
    body = tlv.encode(DataTag.OID, encode_oid(CARD_RECOGNITION_OID))
    body += _oid_object(DataTag.CARD_MANAGEMENT_TYPE, GP_VERSION_OID)
    body += _oid_object(DataTag.CARD_IDENTIFICATION_SCHEME, CARD_IDENTIFICATION_OID)
    for i in variants:
        body += _oid_object(DataTag.SECURE_CHANNEL_PROTOCOL, f"{GP_OID}.4.{SCP11_ID}.{i}")
    recognition = tlv.encode(DataTag.CARD_RECOGNITION_DATA, body)
    return tlv.encode(DataTag.CARD_DATA, recognition) if wrapped else recognition
