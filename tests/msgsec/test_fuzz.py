"""Hypothesis properties for every parser: nothing but InvalidMessage escapes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import World, make_world
from hatchway.errors import InvalidMessage
from hatchway.msgsec import KeyAlg, SignAlg, Suite
from hatchway.msgsec._codec import CodecError, b64d, b64e, loads_object

WORLD = make_world()
TOKEN = WORLD.seal()
KW_WORLD = make_world(SignAlg.EDDSA, KeyAlg.ECDH_ES_A256KW, "X25519")
KW_TOKEN = KW_WORLD.seal()
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_invalid(w: World, token: bytes | str) -> None:
    try:
        w.open(token)
    except InvalidMessage as exc:
        assert str(exc) == "invalid message"
    else:  # pragma: no cover - would be a forgery
        pytest.fail("a mutated token was accepted")


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _only_invalid(WORLD, data)


@FUZZ
@given(st.text(max_size=512))
def test_random_text(data: str) -> None:
    _only_invalid(WORLD, data)


@FUZZ
@given(st.lists(st.binary(max_size=64).map(b64e), min_size=0, max_size=7))
def test_random_segments(parts: list[bytes]) -> None:
    _only_invalid(WORLD, b".".join(parts))


@FUZZ
@given(st.integers(0, len(TOKEN) - 1))
def test_truncations(cut: int) -> None:
    _only_invalid(WORLD, TOKEN[:cut])


@FUZZ
@given(st.data())
def test_bit_flips(data: st.DataObject) -> None:
    for w, token in ((WORLD, TOKEN), (KW_WORLD, KW_TOKEN)):
        buf = bytearray(token)
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        if bytes(buf) != token:  # two flips of one bit restore the original
            _only_invalid(w, bytes(buf))


@FUZZ
@given(st.data())
def test_segment_substitution(data: st.DataObject) -> None:
    parts = TOKEN.split(b".")
    i = data.draw(st.integers(0, 4))
    new = data.draw(st.sampled_from([*KW_TOKEN.split(b"."), b"", b"e30", b"AA"]))
    assume(new != parts[i])
    parts[i] = new
    _only_invalid(WORLD, b".".join(parts))


@FUZZ
@given(st.binary(max_size=300))
def test_b64_round_trip_and_canonical(data: bytes) -> None:
    text = b64e(data)
    assert b64d(text) == data
    for bad in (text + b"=", text + b" ", text.replace(b"A", b"+")):
        if bad != text:
            with pytest.raises(CodecError):
                b64d(bad)


@FUZZ
@given(st.binary(max_size=200))
def test_loads_object_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        assert isinstance(loads_object(data), dict)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5))
def test_suite_from_json_never_crashes(d: dict[str, str]) -> None:
    with contextlib.suppress(InvalidMessage):
        assert isinstance(Suite.from_json(d), Suite)
