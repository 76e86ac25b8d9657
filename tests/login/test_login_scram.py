"""SCRAM-SHA-256 between phone and server: RFC 7677 §3 / RFC 5802 §5 vectors,
session binding, and the one opaque failure."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramClient as ScrampClient
from scramp import ScramMechanism

from hatchway.errors import InvalidMessage, LocalProtocolError
from hatchway.login.scram import (
    ExchangeState,
    ScramClient,
    ScramServerExchange,
    ScramVerifier,
    UnusablePassword,
    decoy_verifier,
    make_verifier,
)
from hatchway.runtime import SeededRandom

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "scram"
FAST = 4096  # the RFC floor keeps the tests quick; production uses DEFAULT_ITERATIONS
REF_A = "hwl1.AAAAAAAAAAAAAAAAAAAAAAAA"
REF_B = "hwl1.BBBBBBBBBBBBBBBBBBBBBBBB"


def load_vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def verifier() -> ScramVerifier:
    return make_verifier("correct horse", random=SeededRandom(b"salt"), iterations=FAST)


@pytest.mark.parametrize("name", ["rfc5802.json", "rfc7677.json"])
def test_vector_file_through_scramp(name: str) -> None:
    """Both RFC examples, through scramp itself: checks the vector files."""
    v = load_vector(name)
    salt = base64.b64decode(v["salt"])
    auth = ScramMechanism(v["mechanism"]).make_auth_info(
        v["password"], iteration_count=v["iterations"], salt=salt
    )
    server = ScramMechanism(v["mechanism"]).make_server(
        lambda _user: auth, s_nonce=v["server_nonce"]
    )
    client = ScrampClient([v["mechanism"]], v["username"], v["password"], c_nonce=v["client_nonce"])
    assert client.get_client_first() == v["client_first"]
    server.set_client_first(v["client_first"])
    assert server.get_server_first() == v["server_first"]
    client.set_server_first(v["server_first"])
    assert client.get_client_final() == v["client_final"]
    server.set_client_final(v["client_final"])
    assert server.get_server_final() == v["server_final"]
    client.set_server_final(v["server_final"])


def test_rfc7677_section_3_through_hatchway() -> None:
    v = load_vector("rfc7677.json")
    salt = base64.b64decode(v["salt"])
    verifier = make_verifier(v["password"], random=lambda n: salt[:n], iterations=v["iterations"])
    assert verifier.salt == salt
    server = ScramServerExchange(
        v["username"], verifier, random=SeededRandom(), server_nonce=v["server_nonce"]
    )
    client = ScramClient(
        v["username"], v["password"], random=SeededRandom(), client_nonce=v["client_nonce"]
    )
    assert client.first() == v["client_first"]
    assert server.start(v["client_first"]) == v["server_first"]
    assert client.final(v["server_first"]) == v["client_final"]
    assert server.finish(v["client_final"]) == v["server_final"]
    client.verify(v["server_final"])
    assert server.state is ExchangeState.SUCCEEDED


def test_round_trip_with_random_nonces(verifier: ScramVerifier, rng: SeededRandom) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    client = ScramClient(REF_A, "correct horse", random=rng)
    first = client.first()
    assert first.startswith(f"n,,n={REF_A},r=")
    client.verify(server.finish(client.final(server.start(first))))


def test_verifier_json_round_trip_and_secrecy(verifier: ScramVerifier) -> None:
    assert ScramVerifier.from_json(verifier.to_json()) == verifier
    assert "correct horse" not in verifier.to_json()
    shown = repr(verifier)
    assert base64.b64encode(verifier.stored_key).decode() not in shown
    assert "stored_key" not in shown and "salt" not in shown


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"mechanism": "SCRAM-SHA-1"}',
        '{"mechanism": "SCRAM-SHA-256", "iterations": "4096"}',
        '{"mechanism": "SCRAM-SHA-256", "iterations": 4096, "salt": 1}',
        '{"mechanism": "SCRAM-SHA-256", "iterations": 4096, "salt": "!!",'
        ' "stored_key": "", "server_key": ""}',
        "x" * 5000,
    ],
)
def test_verifier_from_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ScramVerifier.from_json(text)


@given(st.text(max_size=300))
def test_verifier_from_json_fuzz(text: str) -> None:
    with contextlib.suppress(ValueError):
        ScramVerifier.from_json(text)


@pytest.mark.parametrize(
    "changes",
    [{"salt": b"short"}, {"iterations": 1000}, {"stored_key": b"x" * 20}],
)
def test_verifier_rejects_unusable_fields(verifier: ScramVerifier, changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "salt": verifier.salt,
        "iterations": verifier.iterations,
        "stored_key": verifier.stored_key,
        "server_key": verifier.server_key,
    }
    with pytest.raises(ValueError):
        ScramVerifier(**(fields | changes))


@pytest.mark.parametrize("password", ["", "\u00ad", "bell\u0007", "\ue000private"])
def test_unusable_passwords_are_refused_without_echo(password: str, rng: SeededRandom) -> None:
    with pytest.raises(UnusablePassword) as info:
        make_verifier(password, random=rng, iterations=FAST)
    assert password == "" or password not in str(info.value)
    with pytest.raises(UnusablePassword):
        ScramClient(REF_A, password, random=rng)


def test_make_verifier_refuses_too_few_iterations(rng: SeededRandom) -> None:
    with pytest.raises(ValueError):
        make_verifier("pencil", random=rng, iterations=1000)


# --- failures: each raises the same opaque InvalidMessage -------------------------


def assert_opaque(exc: pytest.ExceptionInfo[InvalidMessage]) -> None:
    assert type(exc.value) is InvalidMessage
    assert str(exc.value) == "invalid message"


def test_wrong_password(verifier: ScramVerifier, rng: SeededRandom) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    client = ScramClient(REF_A, "wrong horse", random=rng)
    client_final = client.final(server.start(client.first()))
    with pytest.raises(InvalidMessage) as exc:
        server.finish(client_final)
    assert_opaque(exc)
    assert server.state is ExchangeState.FAILED


def test_proof_for_one_session_is_refused_by_another(
    verifier: ScramVerifier, rng: SeededRandom
) -> None:
    client = ScramClient(REF_A, "correct horse", random=rng)
    first = client.first()
    server_a = ScramServerExchange(REF_A, verifier, random=rng)
    final_a = client.final(server_a.start(first))

    # Replayed as is: the reference names session A, B refuses it.
    server_b = ScramServerExchange(REF_B, verifier, random=rng)
    with pytest.raises(InvalidMessage) as exc:
        server_b.start(first)
    assert_opaque(exc)

    # Rewritten to name B: the AuthMessage changed, so A's proof no longer fits,
    # even if the attacker also splices in B's nonce.
    server_b = ScramServerExchange(REF_B, verifier, random=rng)
    server_first_b = server_b.start(first.replace(REF_A, REF_B))
    nonce_b = server_first_b.split(",")[0][2:]
    spliced = f"c=biws,r={nonce_b},p={final_a.split(',p=')[1]}"
    with pytest.raises(InvalidMessage) as exc:
        server_b.finish(spliced)
    assert_opaque(exc)


def test_proof_cannot_be_replayed_into_a_new_exchange_of_the_same_session(
    verifier: ScramVerifier, rng: SeededRandom
) -> None:
    client = ScramClient(REF_A, "correct horse", random=rng)
    first = client.first()
    server = ScramServerExchange(REF_A, verifier, random=rng)
    final = client.final(server.start(first))
    server.finish(final)

    again = ScramServerExchange(REF_A, verifier, random=rng)  # fresh server nonce
    again.start(first)
    with pytest.raises(InvalidMessage) as exc:
        again.finish(final)
    assert_opaque(exc)


@pytest.mark.parametrize("where", ["nonce", "proof", "channel-binding"])
def test_tampered_client_final(verifier: ScramVerifier, rng: SeededRandom, where: str) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    client = ScramClient(REF_A, "correct horse", random=rng)
    final = client.final(server.start(client.first()))
    c, r, p = final.split(",")
    if where == "nonce":
        final = f"{c},{r[:-1]}{'A' if r[-1] != 'A' else 'B'},{p}"
    elif where == "proof":
        proof = bytearray(base64.b64decode(p[2:]))
        proof[0] ^= 1
        final = f"{c},{r},p={base64.b64encode(bytes(proof)).decode()}"
    else:
        final = f"c=eSws,{r},{p}"
    with pytest.raises(InvalidMessage) as exc:
        server.finish(final)
    assert_opaque(exc)


def test_unknown_account_fails_the_same_way_with_a_stable_decoy(rng: SeededRandom) -> None:
    decoy = decoy_verifier("mallory", secret=b"server secret", iterations=FAST)
    assert decoy == decoy_verifier("mallory", secret=b"server secret", iterations=FAST)
    assert decoy.salt != decoy_verifier("trent", secret=b"server secret", iterations=FAST).salt
    server = ScramServerExchange(REF_A, decoy, random=rng)
    client = ScramClient(REF_A, "anything", random=rng)
    server_first = server.start(client.first())
    assert f"i={FAST}" in server_first
    with pytest.raises(InvalidMessage) as exc:
        server.finish(client.final(server_first))
    assert_opaque(exc)


@pytest.mark.parametrize(
    "client_first",
    [
        "",
        "y,,n=x,r=abc",
        "p=tls-unique,,n=x,r=abc",
        "n,,",
        "n,,n=,r=abc",
        "n,,r=abc",
        "n,," + "a" * 5000,
    ],
)
def test_malformed_client_first(
    verifier: ScramVerifier, rng: SeededRandom, client_first: str
) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    with pytest.raises(InvalidMessage) as exc:
        server.start(client_first)
    assert_opaque(exc)


@given(garbage=st.text(max_size=200))
def test_client_messages_fuzz(garbage: str) -> None:
    verifier = decoy_verifier("x", secret=b"k", iterations=FAST)
    rng = SeededRandom()
    server = ScramServerExchange(REF_A, verifier, random=rng)
    try:
        server.start(garbage)
    except InvalidMessage:
        return
    with pytest.raises(InvalidMessage):
        server.finish(garbage)


def test_exchange_steps_out_of_order_are_local_errors(
    verifier: ScramVerifier, rng: SeededRandom
) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    with pytest.raises(LocalProtocolError):
        server.finish("c=biws,r=x,p=AAAA")
    with pytest.raises(InvalidMessage):
        server.start("garbage")
    # A failed exchange is closed for good.
    with pytest.raises(LocalProtocolError):
        server.start(ScramClient(REF_A, "correct horse", random=rng).first())


def test_client_refuses_a_forged_server_signature(
    verifier: ScramVerifier, rng: SeededRandom
) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    client = ScramClient(REF_A, "correct horse", random=rng)
    client.final(server.start(client.first()))
    with pytest.raises(InvalidMessage) as exc:
        client.verify("v=" + base64.b64encode(bytes(32)).decode())
    assert_opaque(exc)


@pytest.mark.parametrize(
    "server_first",
    [
        "r=someoneelse,s=QSXCR+Q6sek8bf92,i=4096",  # does not extend our nonce
        "e=other-error",
        "r={n}x,s=QSXCR+Q6sek8bf92,i=100",  # below the RFC 7677 floor
        "r={n}x,s=QSXCR+Q6sek8bf92,i=99999999",  # above the cap
        "x" * 5000,
    ],
)
def test_client_refuses_bad_server_first(rng: SeededRandom, server_first: str) -> None:
    client = ScramClient(REF_A, "pencil", random=rng, client_nonce="abc")
    client.first()
    with pytest.raises(InvalidMessage):
        client.final(server_first.replace("{n}", "abc"))


def test_oversized_messages_are_refused_before_parsing(
    verifier: ScramVerifier, rng: SeededRandom
) -> None:
    server = ScramServerExchange(REF_A, verifier, random=rng)
    client = ScramClient(REF_A, "correct horse", random=rng)
    client.final(server.start(client.first()))
    with pytest.raises(InvalidMessage) as exc:
        server.finish("c=biws,r=" + "x" * 5000)
    assert_opaque(exc)
    with pytest.raises(InvalidMessage):
        client.verify("v=" + "A" * 5000)


def test_client_refuses_an_unusable_nonce(rng: SeededRandom) -> None:
    with pytest.raises(ValueError):
        ScramClient(REF_A, "pencil", random=rng, client_nonce="has,comma")
