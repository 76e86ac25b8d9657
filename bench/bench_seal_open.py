"""Seal + open of a 200-byte telemetry message: hatchway vs. the primitive floor.

Usage: ``.venv/bin/python bench/bench_seal_open.py [--quick]``

For ES256 + ECDH-ES + A256GCM and ES256 + ECDH-ES+A256KW + A256GCM (P-256) it
times one seal followed by one open, for:

(a) the raw-primitive floor: the same ECDSA sign/verify, ephemeral keygen, ECDH,
    Concat KDF (one SHA-256 block, RFC 7518 §4.6.2), AES key wrap and AES-GCM
    done directly with ``cryptography`` -- no JSON, no base64, no checks;
(b) joserfc used the plain documented way (``jwt.encode`` + ``jwe.encrypt_compact``
    with a registry, and ``jwe.decrypt_compact`` + ``jwt.decode`` + claims check);
(c) jwcrypto (``JWT.make_signed_token`` inside a ``JWE``, and the reverse);
(d) hatchway ``seal`` + ``open_message``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from joserfc import jwe as rfc_jwe
from joserfc import jwt as rfc_jwt
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt
from jwcrypto.common import json_encode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import median_us
from hatchway.msgsec import (
    KeyAlg,
    Message,
    MessageType,
    OpenPolicy,
    SenderInfo,
    SignAlg,
    Suite,
    generate_decryption_key,
    generate_signing_key,
    open_message,
    seal,
)
from hatchway.runtime import system_random

DEVICE, SERVER = "device-0001", "hatchway-server"


def telemetry(now: int, size: int = 200) -> Message:
    """A telemetry message issued at ``now`` whose JSON claim set is ``size`` bytes."""
    base = Message(MessageType.TELEMETRY, DEVICE, SERVER, now, now + 300, "j" * 22, 7, {})
    empty = len(
        json.dumps(base.to_claims() | {"dat": {"readings": {"pad": ""}}}, separators=(",", ":"))
    )
    body = {"readings": {"pad": "x" * (size - empty)}}
    return Message(base.typ, DEVICE, SERVER, now, now + 300, "j" * 22, 7, body)


def floor_round(
    sk: ec.EllipticCurvePrivateKey, rk: ec.EllipticCurvePrivateKey, kw: bool, payload: bytes
) -> Callable[[], bytes]:
    """The same primitives a nested JWT needs, called directly."""
    vk, rpub = sk.public_key(), rk.public_key()
    ecdsa, curve, x962 = ec.ECDSA(hashes.SHA256()), ec.SECP256R1(), serialization.Encoding.X962
    point = serialization.PublicFormat.UncompressedPoint
    alg_id = b"ECDH-ES+A256KW" if kw else b"A256GCM"
    other = len(alg_id).to_bytes(4, "big") + alg_id + bytes(8) + (256).to_bytes(4, "big")

    def round_trip() -> bytes:
        # seal
        sig = sk.sign(payload, ecdsa)
        eph = ec.generate_private_key(curve)
        z = eph.exchange(ec.ECDH(), rpub)
        key = hashlib.sha256(b"\x00\x00\x00\x01" + z + other).digest()
        cek = os.urandom(32) if kw else key
        wrapped = aes_key_wrap(key, cek) if kw else b""
        iv = os.urandom(12)
        ct = AESGCM(cek).encrypt(iv, payload + sig, None)
        epk = eph.public_key().public_bytes(x962, point)
        # open
        epub = ec.EllipticCurvePublicKey.from_encoded_point(curve, epk)
        z2 = rk.exchange(ec.ECDH(), epub)
        key2 = hashlib.sha256(b"\x00\x00\x00\x01" + z2 + other).digest()
        cek2 = aes_key_unwrap(key2, wrapped) if kw else key2
        pt = AESGCM(cek2).decrypt(iv, ct, None)
        vk.verify(pt[len(payload) :], pt[: len(payload)], ecdsa)
        return pt

    return round_trip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    number, repeat = (100, 5) if args.quick else (400, 9)

    sk = generate_signing_key(SignAlg.ES256)
    dk = generate_decryption_key("P-256")
    server_public = dk.public()  # imported once, like the other libraries' keys
    # Read when the run starts, not at import: jwcrypto checks exp against the real clock.
    now = int(time.time())
    message = telemetry(now)
    claims = message.to_claims()
    payload = json.dumps(claims, separators=(",", ":")).encode()
    print(f"claims: {len(payload)} bytes; {number} round trips x {repeat} repeats, median\n")

    rfc_sk, rfc_vk = ECKey.import_key(sk.to_jwk()), ECKey.import_key(sk.public().to_jwk())
    rfc_dk, rfc_ek = ECKey.import_key(dk.to_jwk()), ECKey.import_key(dk.public().to_jwk())
    jc_sk, jc_vk = jc_jwk.JWK(**sk.to_jwk()), jc_jwk.JWK(**sk.public().to_jwk())
    jc_dk, jc_ek = jc_jwk.JWK(**dk.to_jwk()), jc_jwk.JWK(**dk.public().to_jwk())

    rows = []
    for key_alg in (KeyAlg.ECDH_ES, KeyAlg.ECDH_ES_A256KW):
        suite = Suite(SignAlg.ES256, key_alg)
        sender = SenderInfo(DEVICE, sk.public(), suite)
        policy = OpenPolicy(SERVER, frozenset({MessageType.TELEMETRY}))
        keys = {dk.kid: dk}

        def hatchway(
            suite: Suite = suite,
            sender: SenderInfo = sender,
            policy: OpenPolicy = policy,
            keys: dict = keys,
        ) -> object:
            token = seal(
                message,
                signing_key=sk,
                recipient_key=server_public,
                suite=suite,
                random=system_random,
            )
            return open_message(
                token,
                decryption_keys=keys,
                resolve_sender=lambda _k: sender,
                policy=policy,
                now=now,
            )

        jws_reg = JWSRegistry(algorithms=["ES256"])
        jwe_reg = JWERegistry(algorithms=[key_alg.value, "A256GCM"])
        claims_reg = rfc_jwt.JWTClaimsRegistry(
            now=now,
            iss={"essential": True, "value": DEVICE},
            aud={"essential": True, "value": SERVER},
        )
        outer = {"alg": key_alg.value, "enc": "A256GCM", "cty": "JWT", "kid": dk.kid}
        inner = {"alg": "ES256", "typ": MessageType.TELEMETRY.value, "kid": sk.kid}

        def joserfc(
            outer: dict = outer,
            inner: dict = inner,
            jws_reg: JWSRegistry = jws_reg,
            jwe_reg: JWERegistry = jwe_reg,
            claims_reg: rfc_jwt.JWTClaimsRegistry = claims_reg,
        ) -> object:
            signed = rfc_jwt.encode(dict(inner), claims, rfc_sk, registry=jws_reg)
            token = rfc_jwe.encrypt_compact(dict(outer), signed, rfc_ek, registry=jwe_reg)
            plain = rfc_jwe.decrypt_compact(token, rfc_dk, registry=jwe_reg).plaintext
            assert plain is not None
            decoded = rfc_jwt.decode(plain, rfc_vk, registry=jws_reg)
            claims_reg.validate(decoded.claims)
            return decoded

        def jwcrypto(outer: dict = outer, inner: dict = inner) -> object:
            signed = jc_jwt.JWT(header=inner, claims=claims)
            signed.make_signed_token(jc_sk)
            enc = jc_jwe.JWE(signed.serialize().encode(), protected=json_encode(outer))
            enc.add_recipient(jc_ek)
            token = enc.serialize(compact=True)
            dec = jc_jwe.JWE(algs=[outer["alg"], "A256GCM"])
            dec.deserialize(token, key=jc_dk)
            return jc_jwt.JWT(
                jwt=dec.payload.decode(),
                key=jc_vk,
                algs=["ES256"],
                check_claims={"iss": DEVICE, "aud": SERVER, "exp": None},
            )

        floor = floor_round(sk.key, dk.key, key_alg is KeyAlg.ECDH_ES_A256KW, payload)
        results = {
            name: median_us(fn, number=number, repeat=repeat)
            for name, fn in (
                ("floor", floor),
                ("hatchway", hatchway),
                ("joserfc", joserfc),
                ("jwcrypto", jwcrypto),
            )
        }
        rows.append((key_alg.value, results))

    print(
        f"{'ES256 + ... + A256GCM':24} {'floor':>9} {'hatchway':>9} {'joserfc':>9} {'jwcrypto':>9}"
        f"  {'hw/floor':>8} {'joserfc/hw':>10} {'jwcrypto/hw':>11}"
    )
    for name, r in rows:
        hw = r["hatchway"]
        print(
            f"{name:24} {r['floor']:8.1f}µ {hw:8.1f}µ {r['joserfc']:8.1f}µ {r['jwcrypto']:8.1f}µ"
            f"  {hw / r['floor']:8.2f} {r['joserfc'] / hw:10.2f} {r['jwcrypto'] / hw:11.2f}"
        )


if __name__ == "__main__":
    main()
