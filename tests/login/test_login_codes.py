"""Device and user codes (RFC 8628 §6.1) and the number-matching digits."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.errors import RemoteProtocolError
from hatchway.login.codes import (
    USER_CODE_ALPHABET,
    entropy_bits,
    guess_probability,
    hash_device_code,
    new_device_code,
    new_match_number,
    new_user_code,
    normalize_user_code,
    session_reference,
)
from hatchway.runtime import SeededRandom

USER_CODE_RE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
# Chi-square critical values at p = 0.001 (so a correct sampler fails 1 run in 1000,
# and with a fixed seed never).
CHI2_CRIT_19_DOF = 43.82
CHI2_CRIT_99_DOF = 148.23


class ScriptedRandom:
    """Returns the given bytes in order, for checking the rejection rule exactly."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        assert len(out) == n, "script exhausted"
        return out


def test_alphabet_is_rfc_8628_base_20_without_vowels_or_lookalikes() -> None:
    assert USER_CODE_ALPHABET == "BCDFGHJKLMNPQRSTVWXZ"
    assert len(set(USER_CODE_ALPHABET)) == 20
    assert not set(USER_CODE_ALPHABET) & set("AEIOUY0123456789")
    assert USER_CODE_ALPHABET.isascii() and USER_CODE_ALPHABET.isupper()


def test_entropy_is_eight_times_log2_twenty() -> None:
    assert entropy_bits() == pytest.approx(8 * math.log2(20))
    assert 34.5 < entropy_bits() < 34.6
    assert entropy_bits(2, 10) == pytest.approx(10.0)


def test_user_code_format(rng: SeededRandom) -> None:
    codes = {new_user_code(rng) for _ in range(500)}
    assert all(USER_CODE_RE.match(c) for c in codes)
    assert len(codes) == 500


def test_user_code_letters_are_uniform(rng: SeededRandom) -> None:
    letters = Counter("".join(new_user_code(rng).replace("-", "") for _ in range(20_000)))
    counts = Counter({USER_CODE_ALPHABET.index(k): v for k, v in letters.items()})
    assert set(letters) == set(USER_CODE_ALPHABET)
    total = sum(counts.values())
    expected = total / 20
    chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(20))
    assert chi2 < CHI2_CRIT_19_DOF


def test_naive_modulo_would_be_biased_and_is_not_used() -> None:
    # Bytes 240..255 would map to B..T a second time under plain "% 20"; they must
    # be thrown away, and the next bytes used instead.
    script = bytes([255, 240, 0, 19, 1, 2, 3, 4, 5, 6, 99, 99, 99, 99])
    assert new_user_code(ScriptedRandom(script)) == "BZCD-FGHJ"


def test_match_number_is_two_uniform_digits(rng: SeededRandom) -> None:
    numbers = Counter(new_match_number(rng) for _ in range(30_000))
    assert set(numbers) == {f"{i:02d}" for i in range(100)}
    expected = 30_000 / 100
    chi2 = sum((n - expected) ** 2 / expected for n in numbers.values())
    assert chi2 < CHI2_CRIT_99_DOF
    # 250..255 are rejected (250 is the largest multiple of 10 that fits a byte):
    # 250 must not become "0", while 201 is a fair "1".
    assert new_match_number(ScriptedRandom(bytes([250, 255, 201, 7, 0, 0]))) == "17"


def test_device_code_has_256_bits_and_only_its_hash_is_kept(rng: SeededRandom) -> None:
    code = new_device_code(rng)
    assert len(base64.urlsafe_b64decode(code + "=")) == 32
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", code)
    assert hash_device_code(code) == hashlib.sha256(code.encode()).digest()
    assert new_device_code(rng) != code
    assert len(hash_device_code("caf\u00e9\ud800")) == 32  # hostile input: no crash


def test_device_code_refuses_a_short_random_source() -> None:
    with pytest.raises(ValueError):
        new_device_code(lambda n: b"\x00" * (n - 1))


def test_session_reference_is_stable_distinct_and_scram_safe() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert session_reference(a) == session_reference(a)
    assert session_reference(a) != session_reference(b)
    assert re.fullmatch(r"hwl1\.[A-Za-z0-9_-]{24}", session_reference(a))
    with pytest.raises(ValueError):
        session_reference(b"short")


def test_guess_probability() -> None:
    space = 20**8
    assert guess_probability(0, 1000) == 0.0
    assert guess_probability(1, 1000) == pytest.approx(1000 / space)
    assert guess_probability(10, 1) == pytest.approx(1 - (1 - 1 / space) ** 10)
    assert guess_probability(1, space * 2) == 1.0
    with pytest.raises(ValueError):
        guess_probability(-1, 1)


codes = st.lists(st.sampled_from(USER_CODE_ALPHABET), min_size=8, max_size=8).map("".join)
separators = st.sampled_from([" ", "-", "\u2013", "\u00a0", "\t", ""])


@given(code=codes, data=st.data())
def test_normalize_accepts_what_people_type(code: str, data: st.DataObject) -> None:
    typed = ""
    for ch in code:
        typed += data.draw(separators)
        typed += ch.lower() if data.draw(st.booleans()) else ch
    typed += data.draw(separators)
    assert normalize_user_code(typed) == f"{code[:4]}-{code[4:]}"


@given(text=st.text(max_size=80))
def test_normalize_is_canonical_or_rejects(text: str) -> None:
    try:
        result = normalize_user_code(text)
    except RemoteProtocolError:
        return
    assert USER_CODE_RE.match(result)
    assert normalize_user_code(result) == result


@pytest.mark.parametrize(
    "typed",
    [
        "BDFG-HJK",  # too short
        "BDFG-HJKLM",  # too long
        "BDFG-HJKA",  # vowel
        "BDFG-HJK1",  # digit
        "BDFG_HJKL",  # underscore is not a separator
        "BDFG-HJKß",  # "ß".upper() == "SS" must not sneak in
        "ＢDFG-HJKL",  # fullwidth letter
        "B" * 100,  # over the length cap
        "",
    ],
)
def test_normalize_rejects(typed: str) -> None:
    with pytest.raises(RemoteProtocolError):
        normalize_user_code(typed)
