"""Wire constants of the secure-element protocol, as enums.

Sources: ISO/IEC 7816-4:2020 §5 (APDU structure, status words, CLA coding),
GlobalPlatform Card Specification v2.3.1 §11 (GP commands, INS values),
GP Card Spec v2.3 Amendment D (SCP03) §6 (security levels) and Amendment F (SCP11)
§5.1 (key identifiers) and §7 (command data). Enum names print in errors, so a
refused APDU reads as ``SW.SECURITY_STATUS_NOT_SATISFIED (6982)`` instead of a bare int.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag, unique


@unique
class SW(IntEnum):
    """Status words the emulator returns and the host understands (ISO 7816-4 §5.6)."""

    OK = 0x9000
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    DATA_INVALID = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_DATA_NOT_FOUND = 0x6A88
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


#: SW1 of "more response data waiting; send GET RESPONSE" (ISO 7816-4 §5.3.4).
SW1_BYTES_REMAINING = 0x61


def sw_name(sw: int) -> str:
    """``NAME (XXXX)`` for known status words, a readable form for ranges, else hex."""
    try:
        return f"{SW(sw).name} ({sw:04X})"
    except ValueError:
        pass
    if sw >> 8 == SW1_BYTES_REMAINING:
        return f"BYTES_REMAINING ({sw:04X})"
    return f"{sw:04X}"


def is_success(sw: int) -> bool:
    """9000 and the 62xx/63xx warnings carry authenticated data; errors do not.

    GP Amendment D §6.2.5: a response with an error status word carries no R-MAC.
    """
    return sw == SW.OK or sw >> 8 in (0x62, 0x63)


@unique
class INS(IntEnum):
    """Instruction bytes (ISO 7816-4 §11, GP Card Spec v2.3.1 §11, Amendment F §7)."""

    SELECT = 0xA4
    GET_RESPONSE = 0xC0
    GET_DATA = 0xCA
    PERFORM_SECURITY_OPERATION = 0x2A
    MUTUAL_AUTHENTICATE = 0x82
    INTERNAL_AUTHENTICATE = 0x88
    #: hatchway proprietary (CLA 80): the bridge hands the card the browser origin.
    SET_ORIGIN = 0x1E
    # Not implemented by the emulator; named so that a refused APDU logs readably.
    VERIFY = 0x20
    CHANGE_REFERENCE_DATA = 0x24
    RESET_RETRY_COUNTER = 0x2C
    MANAGE_CHANNEL = 0x70
    PUT_KEY = 0xD8
    STORE_DATA = 0xE2
    DELETE = 0xE4
    INSTALL = 0xE6


class CLA(IntFlag):
    """Bits of the class byte used here (ISO 7816-4 §5.4.1, GP §11.1.4)."""

    INTERINDUSTRY = 0x00
    SECURE_MESSAGING = 0x04
    CHAINING = 0x10
    PROPRIETARY = 0x80


#: Logical channel number bits of a first-interindustry or GP class byte.
CLA_CHANNEL_MASK = 0x03


@unique
class ScpKid(IntEnum):
    """Key identifiers of the SD ECKA key per SCP11 variant (Amendment F §5.1)."""

    SCP11A = 0x11
    SCP11B = 0x13
    SCP11C = 0x15
    #: PK.CA-KLOC.ECDSA: the trust anchor that verifies OCE certificates.
    CA_KLOC = 0x10


@unique
class Scp11Params(IntEnum):
    """Second byte of tag 90 in the key agreement CRT (Amendment F §7.6.2.3)."""

    SCP11B = 0x00
    SCP11A = 0x01
    SCP11C = 0x03


#: First byte of tag 90: the SCP identifier of SCP11.
SCP11_ID = 0x11


class KeyUsage(IntFlag):
    """Key usage qualifier of tag 95 (GP Card Spec Table 11-17, Amendment F §7.6.2.3)."""

    C_MAC = 0x04
    R_ENCRYPTION = 0x08
    C_DECRYPTION = 0x10
    R_MAC = 0x20
    #: "secure channel with C-MAC, C-DEC, R-MAC and R-ENC": the only level offered.
    FULL = 0x3C


@unique
class KeyType(IntEnum):
    """Key type of tag 80 (GP Card Spec Table 11-16)."""

    AES = 0x88


#: AES-128 session keys: key length in bytes, tag 81.
SESSION_KEY_LENGTH = 16


@unique
class Tag(IntEnum):
    """BER-TLV tags of SCP11 and GP data objects."""

    CONTROL_REFERENCE_TEMPLATE = 0xA6
    SCP_IDENTIFIER = 0x90
    KEY_USAGE = 0x95
    KEY_TYPE = 0x80
    KEY_LENGTH = 0x81
    KEY_REFERENCE = 0x83
    EPHEMERAL_PUBLIC_KEY = 0x5F49
    RECEIPT = 0x86
    CERTIFICATE_STORE = 0xBF21
    FCI = 0x6F
    DF_NAME = 0x84
    FCI_PROPRIETARY = 0xA5
    MAX_BLOCK_LENGTH = 0x9F65
