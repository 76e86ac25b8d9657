"""Key-rotation parsers (msgsec.rotation): known answers and hypothesis properties.

``parse_rotate`` and ``parse_server_keys`` read peer data: whatever they are given,
they accept exactly the well-formed body or raise ``InvalidMessage``, nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.errors import InvalidMessage
from hatchway.msgsec import SignAlg, generate_decryption_key, generate_signing_key
from hatchway.msgsec.rotation import (
    make_proof,
    parse_rotate,
    parse_server_keys,
    recipient_kid,
    server_keys_body,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OLD_SIG = generate_signing_key()
OLD_ENC = generate_decryption_key()
NEW_SIG = generate_signing_key()
NEW_ENC = generate_decryption_key()
DEVICE, SERVER, MID = "meter-1", "https://localhost:8443", "0123456789abcdef"
PROOF = make_proof(
    NEW_SIG, NEW_ENC.public(), device_id=DEVICE, server_id=SERVER, old_kid=OLD_SIG.kid, mid=MID
)
BODY: dict[str, Any] = {
    "mid": MID,
    "signing_key": NEW_SIG.public().to_jwk(),
    "encryption_key": NEW_ENC.public().to_jwk(),
    "proof": PROOF,
}
NOTICE = server_keys_body(NEW_SIG.public(), NEW_ENC.public(), retires_at=5, status="stored")

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def parse(body: Any) -> Any:
    return parse_rotate(
        body,
        device_id=DEVICE,
        server_id=SERVER,
        current=OLD_SIG.public(),
        current_encryption=OLD_ENC.public(),
    )


def test_a_well_formed_rotation_parses() -> None:
    request = parse(BODY)
    assert (request.signing.kid, request.encryption.kid, request.mid) == (
        NEW_SIG.kid,
        NEW_ENC.kid,
        MID,
    )
    assert request.old_kid == OLD_SIG.kid


def test_a_well_formed_notice_parses() -> None:
    notice = parse_server_keys(NOTICE)
    assert (notice.signing.kid, notice.encryption.kid, notice.retires_at) == (
        NEW_SIG.kid,
        NEW_ENC.kid,
        5,
    )


@pytest.mark.parametrize(
    "body",
    [
        {**NOTICE, "server_keys": {"keys": [NEW_SIG.public().to_jwk()]}},
        {**NOTICE, "server_keys": {"keys": [NEW_SIG.public().to_jwk()] * 2}},
        {**NOTICE, "server_keys": {"keys": [], "extra": 1}},
        {**NOTICE, "retires_at": True},
        {
            **NOTICE,
            "server_keys": {
                "keys": [{**NEW_SIG.public().to_jwk(), "kid": "x"}, NEW_ENC.public().to_jwk()]
            },
        },
        {**NOTICE, "server_keys": {"keys": [NEW_SIG.to_jwk(), NEW_ENC.public().to_jwk()]}},
    ],
)
def test_malformed_notices_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage):
        parse_server_keys(body)


def test_an_eddsa_key_for_an_es256_device_is_a_downgrade() -> None:
    ed = generate_signing_key(SignAlg.EDDSA)
    proof = make_proof(
        ed, NEW_ENC.public(), device_id=DEVICE, server_id=SERVER, old_kid=OLD_SIG.kid, mid=MID
    )
    with pytest.raises(InvalidMessage):
        parse({**BODY, "signing_key": ed.public().to_jwk(), "proof": proof})


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(BODY)), JSON, max_size=4))
def test_arbitrary_rotation_bodies(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage):
        parse(body)


@FUZZ
@given(st.sampled_from(sorted(BODY)), JSON)
def test_one_member_replaced(name: str, value: Any) -> None:
    with pytest.raises(InvalidMessage):
        parse({**BODY, name: value})


@FUZZ
@given(st.integers(min_value=0, max_value=len(PROOF) - 1), st.sampled_from("AQgw_-.x"))
def test_a_proof_with_one_character_changed(at: int, char: str) -> None:
    mutated = PROOF[:at] + char + PROOF[at + 1 :]
    if mutated == PROOF:
        return
    with pytest.raises(InvalidMessage):
        parse({**BODY, "proof": mutated})


@FUZZ
@given(st.dictionaries(st.sampled_from(["server_keys", "retires_at", "status"]), JSON, max_size=3))
def test_arbitrary_notices(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage):
        parse_server_keys(body)


@FUZZ
@given(st.binary(max_size=256))
def test_recipient_kid_never_raises(data: bytes) -> None:
    kid = recipient_kid(data)
    assert kid is None or isinstance(kid, str)
