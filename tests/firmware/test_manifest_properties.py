"""Hypothesis properties of the manifest parser: it accepts exactly what was signed,
and anything else ends in ``ManifestRefused`` (never another exception, never acceptance)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.firmware import (
    CHUNK_SIZE,
    InvalidManifest,
    Manifest,
    ManifestRefused,
    TrustStore,
    sign_manifest,
    verify_manifest,
)
from hatchway.msgsec import _jose
from tests.firmware.conftest import NOW, fw_key

KEY = fw_key()
TRUST = TrustStore.of(KEY.public())
HEADER = {"alg": "EdDSA", "kid": KEY.kid, "typ": "hatchway-fw-manifest+jwt"}

digests = st.binary(min_size=32, max_size=32)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    size = draw(st.integers(1, 40 * CHUNK_SIZE))
    count = -(-size // CHUNK_SIZE)
    issued = draw(st.integers(0, 2**40))
    version = st.lists(st.integers(0, 999_999_999), min_size=1, max_size=4).map(
        lambda p: ".".join(map(str, p))
    )
    return Manifest(
        sequence=draw(st.integers(1, 2**53 - 1)),
        device_class=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)),
        version=draw(version),
        size=size,
        sha256=draw(digests),
        chunks=tuple(draw(st.lists(digests, min_size=count, max_size=count))),
        issued_at=issued,
        expires_at=issued + draw(st.integers(1, 2**30)),
        min_version=draw(st.none() | version),
    )


@settings(max_examples=80, deadline=None)
@given(manifest=manifests())
def test_every_valid_manifest_round_trips(manifest: Manifest) -> None:
    token = sign_manifest(manifest, KEY)
    assert verify_manifest(token, TRUST, NOW) == manifest
    assert Manifest.from_claims(json.loads(json.dumps(manifest.to_claims()))) == manifest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    manifest=manifests(),
    name=st.sampled_from(
        [
            "mv",
            "seq",
            "class",
            "version",
            "size",
            "sha256",
            "chunk_size",
            "chunks",
            "iat",
            "exp",
            "min_version",
            "rotate",
            "extra",
        ]
    ),
    value=json_values,
)
def test_a_signed_but_mutated_claim_is_accepted_only_if_it_means_a_valid_manifest(
    manifest: Manifest, name: str, value: Any
) -> None:
    claims = {**manifest.to_claims(), name: value}
    token = _jose.jws_encode(HEADER, json.dumps(claims).encode(), KEY.key)
    try:
        parsed = verify_manifest(token, TRUST, NOW)
    except ManifestRefused:
        return
    assert parsed.to_claims() == claims  # accepted means: exactly what was signed


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048) | st.text(max_size=2048))
def test_arbitrary_input_is_refused_and_nothing_else(data: bytes | str) -> None:
    try:
        verify_manifest(data, TRUST, NOW)
    except InvalidManifest:
        return
    except ManifestRefused:  # e.g. a well-formed header naming an unknown kid
        return
    raise AssertionError("arbitrary input accepted")


@settings(max_examples=200, deadline=None)
@given(manifest=manifests(), position=st.integers(0, 10_000), flip=st.integers(0, 7))
def test_any_single_bit_flip_of_a_signed_manifest_is_refused(
    manifest: Manifest, position: int, flip: int
) -> None:
    token = bytearray(sign_manifest(manifest, KEY))
    token[position % len(token)] ^= 1 << flip
    try:
        verify_manifest(bytes(token), TRUST, NOW)
    except ManifestRefused:
        return
    raise AssertionError("a modified manifest was accepted")
