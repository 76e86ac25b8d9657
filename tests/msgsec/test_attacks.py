"""open_message under attack (RFC 8725 §2 threats, §3 practices): every hostile
token is rejected with the same opaque InvalidMessage."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import _forge
import pytest

from conftest import DEVICE, OPAQUE, SERVER, T0, World, make_world
from hatchway.errors import InvalidMessage, LocalProtocolError
from hatchway.msgsec import (
    KeyAlg,
    MessageType,
    OpenPolicy,
    SenderInfo,
    SignAlg,
    Suite,
    generate_decryption_key,
    generate_signing_key,
)
from hatchway.msgsec._codec import b64d, b64e


def _flip(token: bytes, part: int) -> bytes:
    parts = token.split(b".")
    seg = bytearray(parts[part])
    i = len(seg) // 2
    seg[i] = ord("A") if seg[i] != ord("A") else ord("B")
    parts[part] = bytes(seg)
    return b".".join(parts)


def test_forge_baseline_is_accepted(world: World) -> None:
    # The forger is only useful if its unmodified output opens.
    assert world.open(_forge.nested(world))[0] == world.message()


@pytest.mark.parametrize("part", [0, 2, 3, 4], ids=["header", "iv", "ciphertext", "tag"])
def test_tampered_part(world: World, part: int) -> None:
    world.rejects(_flip(world.seal(), part))


def test_tampered_encrypted_key() -> None:
    w = make_world(key=KeyAlg.ECDH_ES_A256KW)
    w.rejects(_flip(w.seal(), 1))


def test_encrypted_key_smuggled_into_direct_agreement(world: World) -> None:
    parts = world.seal().split(b".")
    parts[1] = b64e(b"\x00" * 40)
    world.rejects(b".".join(parts))


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -1, -17, -40])
def test_truncated(world: World, cut: int) -> None:
    token = world.seal()
    world.rejects(token[:cut])


def test_truncated_at_every_dot(world: World) -> None:
    token = world.seal()
    for i, ch in enumerate(token):
        if ch == ord("."):
            world.rejects(token[:i])
            world.rejects(token[: i + 1])


def test_oversized_rejected_before_parsing(world: World) -> None:
    token = world.seal()
    world.rejects(
        token,
        policy=OpenPolicy(SERVER, frozenset({MessageType.TELEMETRY}), max_size=len(token) - 1),
    )
    world.rejects(b"{" * 70000)  # would be a deep-nesting attack if parsed
    world.rejects("é" * 10)


def test_wrong_recipient_key(world: World) -> None:
    other = generate_decryption_key("P-256")
    world.rejects(world.seal(), decryption_keys={world.decryption.kid: other})


def test_unknown_recipient_kid(world: World) -> None:
    world.rejects(world.seal(), decryption_keys={"someone-else": world.decryption})


def test_recipient_key_on_the_other_curve(world: World) -> None:
    x = generate_decryption_key("X25519")
    world.rejects(world.seal(), decryption_keys={world.decryption.kid: x})


def test_wrong_sender_key(world: World) -> None:
    impostor = generate_signing_key(SignAlg.ES256, kid=world.signing.kid)
    token = world.seal(signing_key=impostor)
    world.rejects(token)


def test_unknown_sender_kid(world: World) -> None:
    world.rejects(world.seal(), resolve_sender=lambda kid: None)


def test_resolved_key_with_another_kid(world: World) -> None:
    info = SenderInfo(DEVICE, replace(world.signing.public(), kid="other"), world.suite)
    world.rejects(world.seal(), resolve_sender=lambda kid: info)


def test_sender_pinned_es256_but_message_eddsa() -> None:
    w = make_world(sign=SignAlg.EDDSA)
    pinned = SenderInfo(DEVICE, w.signing.public(), Suite(SignAlg.ES256, KeyAlg.ECDH_ES))
    w.rejects(w.seal(), resolve_sender=lambda kid: pinned)


def test_sender_pinned_ecdh_es_but_message_a256kw() -> None:
    w = make_world(key=KeyAlg.ECDH_ES_A256KW)
    pinned = SenderInfo(DEVICE, w.signing.public(), Suite(SignAlg.ES256, KeyAlg.ECDH_ES))
    w.rejects(w.seal(), resolve_sender=lambda kid: pinned)


def test_sender_pinned_a256kw_but_message_ecdh_es(world: World) -> None:
    pinned = SenderInfo(DEVICE, world.signing.public(), Suite(SignAlg.ES256, KeyAlg.ECDH_ES_A256KW))
    world.rejects(world.seal(), resolve_sender=lambda kid: pinned)


Forger = Callable[[World], bytes]

HOSTILE: dict[str, Forger] = {
    # inner JWS algorithms outside the allow-list
    "inner alg none": lambda w: _forge.nested(w, header={"alg": "none"}, signature=b""),
    "inner alg None": lambda w: _forge.nested(w, header={"alg": "None"}, signature=b""),
    "inner HS256 keyed with the public key": lambda w: _forge.nested(w, header={"alg": "HS256"}),
    "inner RS256": lambda w: _forge.nested(w, header={"alg": "RS256"}),
    "inner PS256": lambda w: _forge.nested(w, header={"alg": "PS256"}),
    "inner ES512": lambda w: _forge.nested(w, header={"alg": "ES512"}),
    "inner alg missing": lambda w: _forge.nested(w, header={"alg": None}),
    "inner alg not a string": lambda w: _forge.nested(w, header={"alg": ["ES256"]}),
    # outer JWE algorithms outside the allow-list
    "outer RSA-OAEP": lambda w: _forge.outer(w, _forge.inner(w), header={"alg": "RSA-OAEP"}),
    "outer RSA1_5": lambda w: _forge.outer(w, _forge.inner(w), header={"alg": "RSA1_5"}),
    "outer dir": lambda w: _forge.outer(w, _forge.inner(w), header={"alg": "dir"}),
    "outer A256KW": lambda w: _forge.outer(w, _forge.inner(w), header={"alg": "A256KW"}),
    "outer ECDH-ES+A128KW": lambda w: _forge.outer(
        w, _forge.inner(w), header={"alg": "ECDH-ES+A128KW"}
    ),
    "outer enc A128GCM": lambda w: _forge.outer(w, _forge.inner(w), header={"enc": "A128GCM"}),
    "outer enc A256CBC-HS512": lambda w: _forge.outer(
        w, _forge.inner(w), header={"enc": "A256CBC-HS512"}
    ),
    "outer enc missing": lambda w: _forge.outer(w, _forge.inner(w), header={"enc": None}),
    # header members we never honour
    "outer zip DEF": lambda w: _forge.outer(w, _forge.inner(w), header={"zip": "DEF"}),
    "outer jku": lambda w: _forge.outer(w, _forge.inner(w), header={"jku": "https://evil/"}),
    "outer jwk": lambda w: _forge.outer(
        w, _forge.inner(w), header={"jwk": w.decryption.public().to_jwk()}
    ),
    "outer x5u": lambda w: _forge.outer(w, _forge.inner(w), header={"x5u": "https://evil/"}),
    "outer x5c": lambda w: _forge.outer(w, _forge.inner(w), header={"x5c": ["MIIB"]}),
    "outer crit": lambda w: _forge.outer(w, _forge.inner(w), header={"crit": ["exp"], "exp": 1}),
    "outer apu": lambda w: _forge.outer(w, _forge.inner(w), header={"apu": "QWxpY2U"}),
    "inner jku": lambda w: _forge.nested(w, header={"jku": "https://evil/"}),
    "inner jwk": lambda w: _forge.nested(w, header={"jwk": w.signing.public().to_jwk()}),
    "inner x5u": lambda w: _forge.nested(w, header={"x5u": "https://evil/"}),
    "inner x5t": lambda w: _forge.nested(w, header={"x5t": "abc"}),
    "inner crit": lambda w: _forge.nested(w, header={"crit": ["b64"], "b64": False}),
    "inner cty": lambda w: _forge.nested(w, header={"cty": "JWT"}),
    "inner kid missing": lambda w: _forge.nested(w, header={"kid": None}),
    "inner kid not a string": lambda w: _forge.nested(w, header={"kid": 7}),
    # nesting and typing
    "outer cty missing": lambda w: _forge.outer(w, _forge.inner(w), header={"cty": None}),
    "outer cty lowercase": lambda w: _forge.outer(w, _forge.inner(w), header={"cty": "jwt"}),
    "outer cty JSON": lambda w: _forge.outer(w, _forge.inner(w), header={"cty": "JSON"}),
    "outer kid not a string": lambda w: _forge.outer(w, _forge.inner(w), header={"kid": 1}),
    "plaintext is not a JWS": lambda w: _forge.outer(
        w, json.dumps(w.message().to_claims()).encode()
    ),
    "plaintext is a nested JWE": lambda w: _forge.outer(w, _forge.nested(w)),
    "inner typ missing": lambda w: _forge.nested(w, header={"typ": None}),
    "inner typ JWT": lambda w: _forge.nested(w, header={"typ": "JWT"}),
    "inner typ to-device kind": lambda w: _forge.nested(
        w, header={"typ": "hatchway-command+jwt"}, claims={"dat": {"cid": "c", "op": "x"}}
    ),
    # epk
    "epk with private d": lambda w: _forge.outer(
        w,
        _forge.inner(w),
        header={"epk": {**json.loads(b64d(w.seal().split(b".")[0]))["epk"], "d": "AAAA"}},
    ),
    "epk missing": lambda w: _forge.outer(w, _forge.inner(w), header={"epk": None}),
    "epk on X25519 for a P-256 key": lambda w: _forge.outer(
        w,
        _forge.inner(w),
        header={"epk": {"kty": "OKP", "crv": "X25519", "x": b64e(bytes(32)).decode()}},
    ),
    "epk off the curve": lambda w: _forge.outer(
        w,
        _forge.inner(w),
        header={
            "epk": {
                "kty": "EC",
                "crv": "P-256",
                "x": b64e(b"\x01" * 32).decode(),
                "y": b64e(b"\x02" * 32).decode(),
            }
        },
    ),
    "epk with kid": lambda w: _forge.outer(
        w,
        _forge.inner(w),
        header={"epk": {**json.loads(b64d(w.seal().split(b".")[0]))["epk"], "kid": "x"}},
    ),
    # JSON and base64 edge cases
    "duplicate alg in outer header": lambda w: _forge.outer(
        w,
        _forge.inner(w),
        raw_header=(
            b'{"alg":"ECDH-ES","alg":"RSA-OAEP","enc":"A256GCM","cty":"JWT","kid":"%s"}'
            % w.decryption.kid.encode()
        ),
    ),
    "duplicate claim": lambda w: _forge.nested(
        w, raw_claims=json.dumps(w.message().to_claims()).encode()[:-1] + b',"aud":"server"}'
    ),
    "duplicate claim, first wins elsewhere": lambda w: _forge.nested(
        w, raw_claims=(b'{"aud":"server-b",' + json.dumps(w.message().to_claims()).encode()[1:])
    ),
    "claims not UTF-8": lambda w: _forge.nested(w, raw_claims=b'{"iss":"\xff"}'),
    "claims an array": lambda w: _forge.nested(w, raw_claims=b"[1,2]"),
    "claims NaN": lambda w: _forge.nested(
        w, raw_claims=json.dumps(w.message().to_claims() | {"iat": float("nan")}).encode()
    ),
    "claims deeply nested": lambda w: _forge.nested(
        w, raw_claims=b'{"dat":' + b"[" * 5000 + b"]" * 5000 + b"}"
    ),
    "claims huge integer": lambda w: _forge.nested(
        w,
        raw_claims=json.dumps(w.message().to_claims(), separators=(",", ":"))
        .encode()
        .replace(b'"seq":1', b'"seq":' + b"9" * 5000),
    ),
    "padded base64": lambda w: w.seal().replace(b".", b"=.", 1),
    "standard base64 alphabet": lambda w: _forge.outer(w, _forge.inner(w)).replace(b"-", b"+"),
    "JSON serialization": lambda w: json.dumps({"protected": "e30", "ciphertext": ""}).encode(),
    "six parts": lambda w: w.seal() + b".AAAA",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_token(name: str) -> None:
    w = make_world()
    token = HOSTILE[name](w)
    if name in {"standard base64 alphabet"} and b"+" not in token:
        pytest.skip("forged token happened to contain no '-'")
    w.rejects(token)


def test_hostile_tokens_on_x25519_and_eddsa() -> None:
    w = make_world(SignAlg.EDDSA, KeyAlg.ECDH_ES_A256KW, "X25519")
    assert w.open(_forge.nested(w))[0] == w.message()
    w.rejects(
        _forge.outer(
            w,
            _forge.inner(w),
            header={"epk": {"kty": "OKP", "crv": "X25519", "x": b64e(bytes(32)).decode()}},
        )
    )  # small order
    w.rejects(_forge.nested(w, header={"alg": "ES256"}))
    w.rejects(
        _forge.outer(
            w,
            _forge.inner(w),
            header={"epk": {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}},
        )
    )


CLAIMS_ATTACKS: dict[str, dict[str, Any]] = {
    "iss mismatch": {"iss": "device-2"},
    "aud forwarded to another server": {"aud": "server-b"},
    "aud as array": {"aud": ["server"]},
    "expired": {"iat": T0 - 400, "exp": T0 + 10},
    "expired long ago": {"iat": T0 - 1000, "exp": T0 - 500},
    "future dated": {"iat": T0 + 100, "exp": T0 + 200},
    "over-long lifetime": {"exp": T0 + 601},
    "exp before iat": {"iat": T0 + 5, "exp": T0 + 5},
    "iat float": {"iat": T0 + 0.5},
    "exp bool": {"exp": True},
    "exp string": {"exp": str(T0 + 100)},
    "seq negative": {"seq": -1},
    "seq 2**53": {"seq": 2**53},
    "seq float": {"seq": 1.0},
    "seq huge": {"seq": 10**30},
    "jti empty": {"jti": ""},
    "jti too long": {"jti": "j" * 129},
    "jti missing": {"jti": None},
    "unknown claim": {"nbf": T0},
    "dat missing": {"dat": None},
    "dat not an object": {"dat": [1]},
    # TELEMETRY's rule
    "telemetry with irt": {"irt": "x"},
    "telemetry without readings": {"dat": {}},
    "telemetry readings not an object": {"dat": {"readings": 3}},
    "telemetry with a command's keys": {"dat": {"readings": {}, "cid": "c"}},
}


@pytest.mark.parametrize("name", list(CLAIMS_ATTACKS))
def test_claims_attack(world: World, name: str) -> None:
    world.rejects(_forge.nested(world, claims=CLAIMS_ATTACKS[name]))


KIND_ATTACKS: list[tuple[MessageType, dict[str, Any]]] = [
    (MessageType.POLL, {"dat": {"readings": {}}}),
    (MessageType.POLL, {"dat": {"max": "5"}}),
    (MessageType.POLL, {"dat": {}, "irt": "x"}),
    (MessageType.DEREGISTER, {"dat": {}}),
    (MessageType.DEREGISTER, {"dat": {"reason": "r"}, "irt": "x"}),
    (MessageType.COMMAND_RESULT, {"dat": {"cid": "c", "ok": True}}),  # irt missing
    (MessageType.COMMAND_RESULT, {"dat": {"cid": 1, "ok": True}, "irt": "x"}),
    (MessageType.COMMAND_RESULT, {"dat": {"cid": "c", "ok": 1}, "irt": "x"}),
    (MessageType.COMMAND_RESULT, {"dat": {"cid": "c"}, "irt": "x"}),
    (MessageType.TELEMETRY, {"dat": {"cid": "c", "ok": True}, "irt": "x"}),  # a result as telemetry
]


@pytest.mark.parametrize(("kind", "claims"), KIND_ATTACKS)
def test_kind_rule_violated(world: World, kind: MessageType, claims: dict[str, Any]) -> None:
    token = _forge.nested(world, header={"typ": kind.value}, claims=claims)
    world.rejects(
        token,
        expected=frozenset(
            {
                MessageType.TELEMETRY,
                MessageType.POLL,
                MessageType.DEREGISTER,
                MessageType.COMMAND_RESULT,
            }
        ),
    )


DEVICE_KIND_ATTACKS: list[tuple[MessageType, dict[str, Any]]] = [
    (MessageType.COMMAND, {"dat": {"cid": "c"}}),
    (MessageType.COMMAND, {"dat": {"cid": "c", "op": "x", "extra": 1}}),
    (MessageType.FIRMWARE_UPDATE, {"dat": {"release": "1", "manifest": "m", "key": "k"}}),
    (
        MessageType.FIRMWARE_UPDATE,
        {
            "dat": {
                "release": "1",
                "manifest": "m",
                "key": "k",
                "chunks": "/",
                "confirm_within": True,
            }
        },
    ),
    (MessageType.ACK, {"dat": {}}),  # irt missing
    (MessageType.ACK, {"dat": {"cid": "c", "op": "x"}, "irt": "x"}),  # a command as an ack
]


@pytest.mark.parametrize(("kind", "claims"), DEVICE_KIND_ATTACKS)
def test_device_side_kind_rule_violated(
    world: World, kind: MessageType, claims: dict[str, Any]
) -> None:
    token = _forge.nested(world, header={"typ": kind.value}, claims=claims)
    world.rejects(
        token,
        expected=frozenset({MessageType.COMMAND, MessageType.FIRMWARE_UPDATE, MessageType.ACK}),
        policy=OpenPolicy(
            SERVER, frozenset({MessageType.COMMAND, MessageType.FIRMWARE_UPDATE, MessageType.ACK})
        ),
    )


def test_wrong_typ_for_endpoint(world: World) -> None:
    poll = world.message(typ=MessageType.POLL, body={})
    world.rejects(world.seal(poll))  # endpoint expects telemetry only
    assert world.open(world.seal(poll), expected=frozenset({MessageType.POLL}))[0] == poll


def test_boundaries_that_are_accepted(world: World) -> None:
    # The edges of the time rules are inclusive/exclusive exactly as documented.
    now = T0 + 10
    ok = [
        {"iat": now + 60, "exp": now + 61},  # max skew
        {"iat": T0, "exp": T0 + 600},  # max lifetime
        {"iat": now - 599, "exp": now + 1},
        {"seq": 2**53 - 1},
        {"seq": 0},
    ]
    for claims in ok:
        message = world.open(_forge.nested(world, claims=claims))[0]
        assert message.to_claims() == world.message().to_claims() | claims
    world.rejects(_forge.nested(world, claims={"iat": now + 61, "exp": now + 62}))
    world.rejects(_forge.nested(world, claims={"iat": now - 500, "exp": now}))


def test_every_rejection_has_the_same_text() -> None:
    w = make_world()
    reasons = set()
    texts = set()
    for name, forger in HOSTILE.items():
        with pytest.raises(InvalidMessage) as info:
            w.open(forger(w))
        texts.add(str(info.value))
        reasons.add(info.value.reason)
        assert info.value.args == (OPAQUE,), name
    assert texts == {OPAQUE}
    assert len(reasons) > 10  # the log reasons do differ


def test_resolver_failures_are_the_callers(world: World) -> None:
    def broken(kid: str) -> SenderInfo | None:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        world.open(world.seal(), resolve_sender=broken)


def test_non_finite_now_is_a_local_error(world: World) -> None:
    with pytest.raises(LocalProtocolError):
        world.open(world.seal(), now=float("nan"))


def test_non_token_inputs(world: World) -> None:
    for junk in (None, 12, ["a"], b"", "", bytearray(b"a.b.c.d.e"), memoryview(b"....")):
        world.rejects(junk)  # type: ignore[arg-type]
