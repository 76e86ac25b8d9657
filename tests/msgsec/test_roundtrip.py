"""Round trips for every suite, deterministic sealing, and the key/JWK API."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from conftest import DEVICE, SERVER, T0, World, make_world
from hatchway.errors import ConfigurationError, InvalidMessage, LocalProtocolError
from hatchway.msgsec import (
    DEFAULT_SUITE,
    RULES,
    DecryptionKey,
    Direction,
    EncryptionKey,
    KeyAlg,
    MessageType,
    OpenPolicy,
    Presence,
    SignAlg,
    SigningKey,
    Suite,
    VerifyingKey,
    generate_decryption_key,
    generate_signing_key,
    jwk_set,
    thumbprint,
)
from hatchway.runtime import SeededRandom

SUITES = list(itertools.product(SignAlg, KeyAlg, ("P-256", "X25519")))


def _header(segment: bytes) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))


@pytest.mark.parametrize(("sign", "key", "crv"), SUITES)
def test_round_trip_every_suite(sign: SignAlg, key: KeyAlg, crv: str) -> None:
    w = make_world(sign, key, crv)
    message = w.message(body={"readings": {"t": 21.5, "ok": True, "s": "é"}})
    token = w.seal(message)
    opened, sender = w.open(token)
    assert opened == message
    assert sender.id == DEVICE
    outer = _header(token.split(b".")[0])
    assert outer["alg"] == key.value and outer["enc"] == "A256GCM" and outer["cty"] == "JWT"
    assert outer["kid"] == w.decryption.kid and outer["epk"]["crv"] == crv
    assert (token.split(b".")[1] == b"") is (key is KeyAlg.ECDH_ES)


def test_str_token_opens_too(world: World) -> None:
    assert world.open(world.seal().decode())[0] == world.message()


def test_sealing_is_deterministic_under_injected_randomness() -> None:
    # RFC 6979 signatures + ephemeral keys and IVs drawn from ``random`` make a
    # sealed message a known-answer transcript.
    a, b = make_world(), make_world()
    assert a.seal() == b.seal()
    assert a.seal() != a.seal()  # the same world moves its randomness on


def test_explicit_ephemeral_key_is_used(world: World) -> None:
    eph = generate_decryption_key("P-256", random=SeededRandom(b"eph"))
    token = world.seal(ephemeral_key=eph.key)
    epk = _header(token.split(b".")[0])["epk"]
    assert epk["x"] == eph.public().to_jwk()["x"]
    assert world.open(token)[0] == world.message()


@pytest.mark.parametrize("kind", list(MessageType))
def test_every_kind_round_trips_at_an_endpoint_for_its_direction(kind: MessageType) -> None:
    w = make_world()
    samples: dict[MessageType, dict[str, Any]] = {
        MessageType.TELEMETRY: {"readings": {}},
        MessageType.POLL: {"cursor": "c1", "max": 5},
        MessageType.DEREGISTER: {"reason": "retired"},
        MessageType.COMMAND_RESULT: {"cid": "c1", "ok": True, "result": [1]},
        MessageType.COMMAND: {"cid": "c1", "op": "reboot", "args": {}},
        MessageType.FIRMWARE_UPDATE: {
            "release": "r1",
            "manifest": "m",
            "key": "k",
            "chunks": "/fw/r1/",
        },
        MessageType.FIRMWARE_REPORT: {"release": "r1", "state": "downloading", "progress": 40},
        MessageType.ACK: {"status": "ok"},
        MessageType.KEY_ROTATE: {
            "mid": "m1",
            "signing_key": {},
            "encryption_key": {},
            "proof": "p",
        },
        MessageType.KEY_ROTATED: {
            "certificate": "pem",
            "signing_kid": "s",
            "encryption_kid": "e",
            "retires_at": 1,
        },
        MessageType.SERVER_KEYS: {"server_keys": {"keys": []}, "retires_at": 1, "status": "ok"},
        MessageType.DEREGISTERED: {"reason": "stolen", "revoked_at": 1764547200},
    }
    irt = "req-1" if RULES[kind].irt is Presence.REQUIRED else None
    message = w.message(typ=kind, body=samples[kind], in_reply_to=irt)
    same_direction = frozenset(
        k for k in MessageType if RULES[k].direction == RULES[kind].direction
    )
    assert w.open(w.seal(message), expected=same_direction)[0] == message


def test_seal_refuses_a_message_that_breaks_its_rule(world: World) -> None:
    with pytest.raises(LocalProtocolError):
        world.seal(world.message(body={"nope": 1}))
    with pytest.raises(LocalProtocolError):
        world.seal(world.message(in_reply_to="x"))


def test_seal_refuses_a_key_outside_the_suite(world: World) -> None:
    with pytest.raises(LocalProtocolError):
        world.seal(signing_key=generate_signing_key(SignAlg.EDDSA))
    with pytest.raises(LocalProtocolError):  # X25519 ephemeral for a P-256 recipient
        world.seal(ephemeral_key=generate_decryption_key("X25519").key)


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": -1},
        {"seq": 2**53},
        {"iat": True},
        {"exp": 1.5},
        {"jti": ""},
        {"jti": "j" * 129},
        {"iss": ""},
        {"aud": 3},
        {"body": []},
        {"in_reply_to": ""},
        {"typ": "hatchway-telemetry"},
    ],
)
def test_message_construction_validates_claims(world: World, changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage):
        world.message(**changes)


def test_policy_requires_one_direction() -> None:
    with pytest.raises(ConfigurationError):
        OpenPolicy(SERVER, frozenset({MessageType.TELEMETRY, MessageType.COMMAND}))
    with pytest.raises(ConfigurationError):
        OpenPolicy(SERVER, frozenset())
    with pytest.raises(ConfigurationError):
        OpenPolicy("", frozenset({MessageType.TELEMETRY}))


def test_suite_json_round_trip_and_strictness() -> None:
    for sign, key, _ in SUITES:
        suite = Suite(sign, key)
        assert Suite.from_json(suite.to_json()) == suite
    assert Suite.from_json({"sign": "ES256"}) == DEFAULT_SUITE
    for bad in (
        {"sign": "HS256"},
        {"sign": "ES256", "key": "RSA-OAEP"},
        {"sign": "ES256", "enc": "A128GCM"},
        {"sign": "ES256", "zip": "DEF"},
        {},
    ):
        with pytest.raises(InvalidMessage):
            Suite.from_json(bad)
    with pytest.raises(ValueError):
        Suite("ES512")  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", list(SignAlg))
def test_signing_key_jwk_round_trip(alg: SignAlg) -> None:
    key = generate_signing_key(alg)
    again = SigningKey.from_jwk(key.to_jwk())
    assert again.kid == key.kid and again.alg is alg
    assert VerifyingKey.from_jwk(key.public().to_jwk()) == key.public()
    public = key.to_jwk(private=False)
    assert "d" not in public and public["use"] == "sig" and public["alg"] == alg.value


@pytest.mark.parametrize("crv", ["P-256", "X25519"])
def test_decryption_key_jwk_round_trip(crv: str) -> None:
    key = generate_decryption_key(crv)
    assert DecryptionKey.from_jwk(key.to_jwk()).kid == key.kid
    assert EncryptionKey.from_jwk(key.public().to_jwk()) == key.public()


def test_jwk_set_holds_only_public_halves() -> None:
    sk, dk = generate_signing_key(), generate_decryption_key("X25519")
    jwks = jwk_set(sk, dk, dk.public())
    assert [k["kid"] for k in jwks["keys"]] == [sk.kid, dk.kid, dk.kid]
    assert all("d" not in k for k in jwks["keys"])


def _tweak(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**jwk, **changes}
    return {k: v for k, v in out.items() if v is not None}


def test_from_jwk_is_strict() -> None:
    sk, dk = generate_signing_key(), generate_decryption_key()
    other = generate_signing_key()
    pub = sk.public().to_jwk()
    bad_public = [
        _tweak(pub, d=sk.to_jwk()["d"]),  # private member in a public key
        _tweak(pub, p="AQAB"),
        _tweak(pub, kty="OKP"),
        _tweak(pub, crv="P-384"),
        _tweak(pub, y=other.public().to_jwk()["y"]),  # off the curve
        _tweak(pub, x=pub["x"] + "A"),
        _tweak(pub, y=None),
        _tweak(pub, use="enc"),
        _tweak(pub, alg="ES512"),
        _tweak(pub, key_ops=["encrypt"]),
        _tweak(pub, x5u="https://evil.example/"),
        _tweak(pub, kid=""),
        _tweak(pub, x=pub["x"] + "="),
    ]
    for jwk in bad_public:
        with pytest.raises(ValueError):
            VerifyingKey.from_jwk(jwk)
    with pytest.raises(ValueError):  # d does not belong to x/y
        SigningKey.from_jwk(_tweak(sk.to_jwk(), d=other.to_jwk()["d"]))
    with pytest.raises(ValueError):  # an Ed25519 signing key is not a key-agreement key
        EncryptionKey.from_jwk(
            _tweak(generate_signing_key(SignAlg.EDDSA).public().to_jwk(), use=None, alg=None)
        )
    with pytest.raises(ValueError):  # nor is a key marked for signatures
        EncryptionKey.from_jwk(pub)
    with pytest.raises(ValueError):
        DecryptionKey.from_jwk(_tweak(dk.to_jwk(), alg="RSA-OAEP"))
    with pytest.raises(ValueError):
        DecryptionKey.from_jwk(dk.public().to_jwk())  # no d
    with pytest.raises(ValueError):
        generate_decryption_key("P-521")


def test_kid_defaults_to_the_rfc7638_thumbprint() -> None:
    jwk = generate_signing_key().public().to_jwk()
    del jwk["kid"]
    key = VerifyingKey.from_jwk(jwk)
    assert key.kid == thumbprint(key.key)
    assert len(key.kid) == 43


def test_rules_table_is_mutually_exclusive() -> None:
    # For any two kinds flowing the same way, either irt separates them or one
    # requires a body key the other does not permit. That is what makes the
    # claims of one kind invalid under every other kind's rule.
    for a, b in itertools.permutations(MessageType, 2):
        ra, rb = RULES[a], RULES[b]
        if ra.direction != rb.direction:
            continue
        irt_apart = {ra.irt, rb.irt} == {Presence.REQUIRED, Presence.FORBIDDEN}
        permitted_b = set(rb.required) | set(rb.optional)
        keys_apart = bool(set(ra.required) - permitted_b) or bool(
            set(rb.required) - set(ra.required) - set(ra.optional)
        )
        assert irt_apart or keys_apart, (a, b)
    assert {r.direction for r in RULES.values()} == set(Direction)


def test_claims_json_matches_rfc7519_names(world: World) -> None:
    message = world.message(
        typ=MessageType.COMMAND_RESULT, body={"cid": "c", "ok": False}, in_reply_to="r"
    )
    assert message.to_claims() == {
        "iss": DEVICE,
        "aud": SERVER,
        "iat": T0,
        "exp": T0 + 300,
        "jti": "jti-1",
        "seq": 1,
        "dat": {"cid": "c", "ok": False},
        "irt": "r",
    }
