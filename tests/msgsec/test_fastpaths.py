"""The speed paths must accept and mean exactly what the strict paths do."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_world
from hatchway.msgsec import KeyAlg, SignAlg, _jose
from hatchway.msgsec._codec import CodecError, b64d, b64e, dumps, loads_object

FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FINITE | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize(
    ("sign", "key", "crv"),
    [
        (SignAlg.ES256, KeyAlg.ECDH_ES, "P-256"),
        (SignAlg.EDDSA, KeyAlg.ECDH_ES_A256KW, "X25519"),
    ],
)
def test_own_jwe_header_takes_the_fast_path_and_parses_the_same(
    sign: SignAlg, key: KeyAlg, crv: str
) -> None:
    segment = make_world(sign, key, crv).seal().split(b".")[0]
    assert _jose._OWN_JWE_HEADER.fullmatch(b64d(segment).decode())
    fast = _jose._jwe_header(segment, _jose.JWE_MEMBERS)
    assert fast == _jose._header(segment, _jose.JWE_MEMBERS) == json.loads(b64d(segment))


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"ECDH-ES","enc":"A256GCM","kid":"k\\u0041","cty":"JWT","epk":{}}',  # escape
        b'{"alg":"ECDH-ES","enc":"A256GCM","kid":"k","cty":"JWT","epk":{"kty":"EC"}} ',
    ],
)
def test_other_jwe_headers_take_the_strict_path(header: bytes) -> None:
    assert _jose._OWN_JWE_HEADER.fullmatch(header.decode()) is None


@pytest.mark.parametrize(
    "text", [b'{"a":1,"a":1}', b'{"a":1,"a":2}', b'{"a":{"b":1,"b":1}}', b'{"a":NaN}']
)
def test_compact_duplicates_and_nan_are_rejected(text: bytes) -> None:
    with pytest.raises(CodecError):
        loads_object(text)


@pytest.mark.parametrize(
    "text",
    [
        b'{"kid":"\\ud800"}',  # issue 7: a lone surrogate escape reached sqlite3
        b'{"kid":"\\udfff"}',
        b'{"kid":"\xed\xa0\x80"}',  # the same surrogate, raw (not UTF-8)
        b'{"a":"\\ud800\\u0041"}',  # high surrogate followed by a non-surrogate
        b'{"a":1e400}',
        b'{"a":-Infinity}',
        b'{"a":' * 17 + b"1" + b"}" * 17,
    ],
)
def test_text_that_is_not_valid_unicode_or_finite_is_rejected(text: bytes) -> None:
    with pytest.raises(CodecError):
        loads_object(text)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate")
    return dict(pairs)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("overflow")
    return value


def _reference(data: bytes) -> dict[str, Any]:
    """The standard library, told every rule the codec enforces (RFC 7493 I-JSON)."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique,
            parse_float=_number,
            parse_constant=_number,
        )
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates fail here
    except (ValueError, RecursionError):
        raise CodecError("reference refused") from None
    if not isinstance(value, dict):
        raise CodecError("not an object")
    return value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_dumps_round_trips_and_loads_agrees_with_strict(value: dict[str, Any]) -> None:
    out = dumps(value)
    assert loads_object(out) == _reference(out) == json.loads(out) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_loads_object_agrees_with_the_reference_on_any_bytes(data: bytes) -> None:
    def outcome(fn: Any) -> object:
        try:
            return fn(data)
        except CodecError:
            return CodecError

    assert outcome(loads_object) == outcome(_reference)


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    ("value", "error"),
    [({"x": math.nan}, ValueError), ({"x": math.inf}, ValueError), ({"x": _Point(1)}, TypeError)],
)
def test_dumps_still_refuses_what_the_standard_encoder_refuses(
    value: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, _jose.P256_ORDER - 1), st.integers(0, _jose.P256_ORDER - 1))
def test_es256_der_handling_matches_cryptography(r: int, s: int) -> None:
    # verify() builds the DER itself and sign() slices OpenSSL's: both must be
    # byte for byte what encode_dss_signature / decode_dss_signature give.
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    seen: list[bytes] = []

    class _Key:
        def verify(self, der: bytes, data: bytes, alg: object) -> None:
            seen.append(der)

        def sign(self, data: bytes, alg: object) -> bytes:
            return encode_dss_signature(r, s)

        curve = ec.SECP256R1()

    _jose.verify("ES256", _Key(), b"data", raw)  # type: ignore[arg-type]
    assert seen == [encode_dss_signature(r, s)]
    assert decode_dss_signature(seen[0]) == (r, s)
    assert _jose.sign("ES256", _Key(), b"data") == raw  # type: ignore[arg-type]


def test_es256_sign_refuses_a_key_off_p256() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(_jose.JoseError):
        _jose.sign("ES256", key, b"data")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=40), st.integers(0, 3))
def test_jwe_iv_and_ciphertext_decode_as_one_pass_does_apart(
    iv: bytes, ct: bytes, flip: int
) -> None:
    iv_seg, ct_seg = b64e(iv[:12]), b64e(ct)
    if flip and ct_seg:  # a non-canonical or foreign last character
        ct_seg = ct_seg[:-1] + b"B=_+"[flip - 1 : flip]
    token = b".".join((b64e(b'{"alg":"ECDH-ES","enc":"A256GCM"}'), b"", iv_seg, ct_seg, b64e(iv)))

    def apart() -> object:
        try:
            return b64d(iv_seg), b64d(ct_seg)
        except CodecError:
            return CodecError

    def together() -> object:
        try:
            parts = _jose.jwe_parse(token)
        except _jose.JoseError:
            return CodecError
        return parts.iv, parts.ciphertext

    assert apart() == together()
