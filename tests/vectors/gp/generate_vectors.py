"""Regenerate the GP known-answer vectors in this directory, cross-checked with yubikit.

Run: ``.venv/bin/python tests/vectors/gp/generate_vectors.py``.

Every value written here is computed twice — once by hatchway, once by Yubico's
``yubikit.core.smartcard.scp`` (yubikey-manager), an independent implementation
of GP Amendment D/F that ships against real YubiKeys — and the script refuses to
write anything if they disagree:

* SCP11a/b: yubikit's ``ScpState.scp11_init`` runs against hatchway's card-side
  key agreement, with both ephemeral keys fixed (yubikit's key generation is
  pinned to the fixed scalar for the run); its session keys and receipt must equal
  hatchway's. Secure-messaging vectors are produced by hatchway's host and card and
  each is opened by yubikit's ``ScpState`` (``unmac``/``decrypt``) and re-created
  by it (``encrypt``/``mac``) byte for byte.
* SCP03: session keys and cryptograms from the default test keys (40..4F) against
  yubikit's ``StaticKeys.derive`` / ``_derive``, then the same SM checks.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yubikit.core.smartcard import scp as yk

from hatchway.runtime import SeededRandom
from hatchway.se import tlv
from hatchway.se.apdu import CommandApdu, ResponseApdu
from hatchway.se.constants import KeyUsage, Scp11Params, ScpKid, Tag
from hatchway.se.kdf import (
    SCP03_CARD_CRYPTOGRAM,
    SCP03_HOST_CRYPTOGRAM,
    SessionKeys,
    derive_scp11_keys,
    ecka,
    p256_key_from_random,
    receipt,
    scp03_derive,
    scp03_session_keys,
    scp11_shared_info,
)
from hatchway.se.scp11_card import encode_point
from hatchway.se.securemsg import CardSecureChannel, SecureChannel

HERE = Path(__file__).parent

#: Plain command/response pairs run through each channel, in order.
EXCHANGES = [
    (CommandApdu(0x80, 0x42, 0, 0, b"provisioned secret"), ResponseApdu(b"", 0x9000)),
    (CommandApdu(0x80, 0x44, 0, 0, b"x" * 40), ResponseApdu(b"provisioned secret", 0x9000)),
    (
        CommandApdu(0x80, 0xCA, 0xBF, 0x21, b"\xa6\x04\x83\x02\x13\x01"),
        ResponseApdu(bytes(range(200)), 0x9000),
    ),
    (CommandApdu(0x80, 0x44, 0, 0, b"y"), ResponseApdu(b"", 0x6A88)),
]


def _placeholder_cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """yubikit insists on sending a chain; its content does not enter the KDF."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vector OCE")])
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def scalar(key: ec.EllipticCurvePrivateKey) -> str:
    return f"{key.private_numbers().private_value:064x}"


def sm_vectors(host_keys: SessionKeys, chain: bytes) -> list[dict[str, str]]:
    host = SecureChannel(host_keys, chain)
    card = CardSecureChannel(host_keys, chain, oce_authenticated=True)
    theirs = yk.ScpState(yk.SessionKeys(host_keys.s_enc, host_keys.s_mac, host_keys.s_rmac), chain)
    out = []
    for plain_cmd, plain_resp in EXCHANGES:
        wrapped = host.wrap_command(plain_cmd)
        # yubikit builds the same protected command: encrypt, then MAC the short header.
        enc = theirs.encrypt(plain_cmd.data)
        header = struct.pack(
            ">BBBBB", plain_cmd.cla | 4, plain_cmd.ins, plain_cmd.p1, plain_cmd.p2, len(enc) + 8
        )
        assert wrapped.data == enc + theirs.mac(header + enc), "C-MAC/C-ENC differ"
        assert card.unwrap_command(wrapped).data == plain_cmd.data
        protected = card.wrap_response(plain_resp)
        if protected.data:
            opened = theirs.unmac(protected.data, protected.sw)
            assert (theirs.decrypt(opened) if opened else b"") == plain_resp.data
        assert host.unwrap_response(protected) == plain_resp
        out.append(
            {
                "command": plain_cmd.encode().hex(),
                "protected_command": wrapped.encode().hex(),
                "response": plain_resp.encode().hex(),
                "protected_response": protected.encode().hex(),
            }
        )
    return out


def scp11_vector(variant: str) -> dict[str, Any]:
    rng = SeededRandom(f"gp-scp11{variant}-vector".encode())
    sd_key = p256_key_from_random(rng)
    oce_key = p256_key_from_random(rng)
    esk_oce = p256_key_from_random(rng)
    esk_sd = p256_key_from_random(rng)
    kid = ScpKid.SCP11A if variant == "a" else ScpKid.SCP11B
    params = Scp11Params.SCP11A if variant == "a" else Scp11Params.SCP11B
    crt = tlv.encode_many(
        [
            (Tag.SCP_IDENTIFIER, bytes([0x11, params])),
            (Tag.KEY_USAGE, bytes([KeyUsage.FULL])),
            (Tag.KEY_TYPE, b"\x88"),
            (Tag.KEY_LENGTH, b"\x10"),
        ]
    )
    command_data = tlv.encode(Tag.CONTROL_REFERENCE_TEMPLATE, crt) + tlv.encode(
        Tag.EPHEMERAL_PUBLIC_KEY, encode_point(esk_oce.public_key())
    )
    epk_sd_tlv = tlv.encode(Tag.EPHEMERAL_PUBLIC_KEY, encode_point(esk_sd.public_key()))
    static_oce = oce_key if variant == "a" else esk_oce
    sh_see = ecka(esk_sd, esk_oce.public_key())
    sh_ses = ecka(sd_key, static_oce.public_key())
    keys = derive_scp11_keys(sh_see, sh_ses, scp11_shared_info())
    mac = receipt(keys.receipt_key, command_data + epk_sd_tlv)
    response_data = epk_sd_tlv + tlv.encode(Tag.RECEIPT, mac)

    # Cross-check: yubikit's OCE side against these fixed values.
    def send_apdu(cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        if ins == yk.INS_PERFORM_SECURITY_OPERATION:
            return b""
        assert data == command_data, "yubikit built different key agreement data"
        return response_data

    params_yk = yk.Scp11KeyParams(
        yk.KeyRef(kid, 1),
        sd_key.public_key(),
        *((yk.KeyRef(0x10, 3), oce_key, [_placeholder_cert(oce_key)]) if variant == "a" else ()),
    )
    with mock.patch("yubikit.core.smartcard.scp.ec.generate_private_key", return_value=esk_oce):
        state = yk.ScpState.scp11_init(send_apdu, params_yk)
    assert state._keys == (
        keys.session.s_enc,
        keys.session.s_mac,
        keys.session.s_rmac,
        keys.session.s_dek,
    ), "session keys differ from yubikit"
    assert state._mac_chain == mac

    return {
        "description": f"SCP11{variant}, P-256, AES-128, full security level (3C)",
        "sk_sd_ecka": scalar(sd_key),
        "sk_oce_ecka": scalar(oce_key) if variant == "a" else None,
        "esk_oce_ecka": scalar(esk_oce),
        "esk_sd_ecka": scalar(esk_sd),
        "command": CommandApdu(0x80, 0x82 if variant == "a" else 0x88, 1, kid, command_data)
        .encode()
        .hex(),
        "response_data": response_data.hex(),
        "sh_see": sh_see.hex(),
        "sh_ses": sh_ses.hex(),
        "shared_info": scp11_shared_info().hex(),
        "receipt_key": keys.receipt_key.hex(),
        "s_enc": keys.session.s_enc.hex(),
        "s_mac": keys.session.s_mac.hex(),
        "s_rmac": keys.session.s_rmac.hex(),
        "s_dek": (keys.session.s_dek or b"").hex(),
        "receipt": mac.hex(),
        "secure_messaging": sm_vectors(keys.session, mac),
    }


def scp03_vector() -> dict[str, Any]:
    key = bytes(range(0x40, 0x50))
    host_challenge = bytes.fromhex("0102030405060708")
    card_challenge = bytes.fromhex("a1a2a3a4a5a6a7a8")
    keys = scp03_session_keys(key, key, host_challenge, card_challenge)
    theirs = yk.StaticKeys(key, key, key).derive(host_challenge + card_challenge)
    assert (theirs.key_senc, theirs.key_smac, theirs.key_srmac) == (
        keys.s_enc,
        keys.s_mac,
        keys.s_rmac,
    ), "SCP03 session keys differ from yubikit"
    context = host_challenge + card_challenge
    card_crypto = scp03_derive(keys.s_mac, SCP03_CARD_CRYPTOGRAM, context, 64)
    host_crypto = scp03_derive(keys.s_mac, SCP03_HOST_CRYPTOGRAM, context, 64)
    assert card_crypto == yk._derive(keys.s_mac, 0x00, context, 0x40)
    assert host_crypto == yk._derive(keys.s_mac, 0x01, context, 0x40)
    return {
        "description": "SCP03 AES-128, default test keys 40..4F, i=70",
        "static_key": key.hex(),
        "host_challenge": host_challenge.hex(),
        "card_challenge": card_challenge.hex(),
        "s_enc": keys.s_enc.hex(),
        "s_mac": keys.s_mac.hex(),
        "s_rmac": keys.s_rmac.hex(),
        "card_cryptogram": card_crypto.hex(),
        "host_cryptogram": host_crypto.hex(),
        "secure_messaging": sm_vectors(keys, bytes(16)),
    }


def main() -> None:
    for name, vector in (
        ("scp11a.json", scp11_vector("a")),
        ("scp11b.json", scp11_vector("b")),
        ("scp03.json", scp03_vector()),
    ):
        vector["cross_checked_with"] = "yubikey-manager (yubikit.core.smartcard.scp)"
        (HERE / name).write_text(json.dumps(vector, indent=2) + "\n", encoding="utf-8")
        print("wrote", name)


if __name__ == "__main__":
    main()
