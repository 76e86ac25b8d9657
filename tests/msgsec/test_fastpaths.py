"""The speed paths must accept and mean exactly what the strict paths do."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_world
from hatchway.msgsec import KeyAlg, SignAlg, _jose
from hatchway.msgsec._codec import CodecError, _strict_loads, b64d, dumps, loads_object

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


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_dumps_round_trips_and_loads_agrees_with_strict(value: dict[str, Any]) -> None:
    out = dumps(value)
    assert loads_object(out) == _strict_loads(out) == json.loads(out) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_loads_object_agrees_with_strict_on_any_bytes(data: bytes) -> None:
    def outcome(fn: Any) -> object:
        try:
            return fn(data)
        except CodecError:
            return CodecError

    assert outcome(loads_object) == outcome(_strict_loads)


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
