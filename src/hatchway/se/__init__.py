"""Secure-element channel: origin-bound application certificate, then SCP11.

US 10,812,467 B2 claim 1 on GlobalPlatform SCP11 (Card Spec v2.3 Amendment F) with
SCP03 secure messaging (Amendment D). The safe surface is re-exported here:

* ``Scp11Host`` → ``SecureChannel.wrap / unwrap``: the server's (OCE) side;
* ``SoftCard``: the emulated card, ``transmit(apdu) -> rapdu``;
* ``issue_application_certificate`` / ``origin_identity``: the origin binding;
* ``personalize`` / ``CardStateFile``: card provisioning and persistence.

Low-level pieces (``apdu``, ``tlv``, ``kdf``, ``securemsg``) stay in their modules.
"""

from __future__ import annotations

from .apdu import CommandApdu, ResponseApdu, transceive
from .appcert import (
    ORIGIN_BINDING_OID,
    issue_application_certificate,
    origin_identity,
    serialize_origin,
    spki_identity,
)
from .applet import HATCHWAY_AID, AppletIns
from .cardstate import CardState, CardStateFile, personalize
from .constants import INS, SW
from .emulator import SD_AID, SoftCard
from .errors import ApduError, ChannelClosed, MalformedApdu, MalformedTlv
from .scp11_host import (
    KeyRef,
    Scp11Host,
    Scp11Variant,
    get_certificate_store_command,
    parse_certificate_store,
)
from .securemsg import SecureChannel

__all__ = [
    "HATCHWAY_AID",
    "INS",
    "ORIGIN_BINDING_OID",
    "SD_AID",
    "SW",
    "ApduError",
    "AppletIns",
    "CardState",
    "CardStateFile",
    "ChannelClosed",
    "CommandApdu",
    "KeyRef",
    "MalformedApdu",
    "MalformedTlv",
    "ResponseApdu",
    "Scp11Host",
    "Scp11Variant",
    "SecureChannel",
    "SoftCard",
    "get_certificate_store_command",
    "issue_application_certificate",
    "origin_identity",
    "parse_certificate_store",
    "personalize",
    "serialize_origin",
    "spki_identity",
    "transceive",
]
