"""Hypothesis properties of the other firmware parsers: the trust file and the wrapped key.

Each either returns a value that round-trips or raises its one documented error:
``ValueError`` for the trust file (the CLI turns it into exit code 2), the opaque
``InvalidManifest`` for a wrapped content key.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.firmware import InvalidManifest, TrustStore, unwrap_content_key, wrap_content_key
from hatchway.msgsec.keys import generate_decryption_key
from hatchway.runtime import SeededRandom
from tests.firmware.conftest import fw_key

GOOD_JWK = fw_key().public().to_jwk()
DEVICE = generate_decryption_key("P-256", random=SeededRandom(b"device"))
DIGEST = bytes(range(32))
WRAPPED = wrap_content_key(bytes(32), DIGEST, DEVICE.public(), SeededRandom(b"w"))

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
entry_members = st.sampled_from(
    ["jwk", "status", "added", "not_after", "revoked_at", "reason", "x"]
)


@st.composite
def trust_files(draw: st.DrawFn) -> dict[str, Any]:
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        entry: dict[str, Any] = {"jwk": draw(st.just(GOOD_JWK) | values)}
        entry.update(
            draw(
                st.dictionaries(
                    entry_members,
                    values | st.sampled_from(["active", "retired", "revoked"]),
                    max_size=4,
                )
            )
        )
        entries.append(entry)
    return {
        "format": draw(st.just("hatchway-fw-trust/1") | st.text(max_size=5)),
        "keys": draw(st.just(entries) | values),
    }


@settings(max_examples=200, deadline=None)
@given(raw=trust_files())
def test_trust_file_parser_round_trips_or_raises_value_error(raw: dict[str, Any]) -> None:
    try:
        store = TrustStore.from_json(raw)
    except ValueError:
        return
    assert TrustStore.from_json(store.to_json()).to_json() == store.to_json()


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), flip=st.integers(0, 7), cut=st.integers(0, 3000))
def test_a_modified_wrapped_key_is_refused_opaquely(position: int, flip: int, cut: int) -> None:
    token = bytearray(WRAPPED)
    token[position % len(token)] ^= 1 << flip
    for candidate in (bytes(token), WRAPPED[:cut] if cut < len(WRAPPED) else WRAPPED + b"."):
        with pytest.raises(InvalidManifest):
            unwrap_content_key(candidate, DEVICE, DIGEST)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000) | st.text(max_size=3000))
def test_arbitrary_input_is_an_opaque_refusal(data: bytes | str) -> None:
    with pytest.raises(InvalidManifest):
        unwrap_content_key(data, DEVICE, DIGEST)
