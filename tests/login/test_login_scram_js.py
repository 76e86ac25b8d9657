"""static/scram.js under node: byte-identical to the Python client, same SASLprep.

The phone page's module must produce exactly the messages ``ScramClient`` does
(RFC 7677 §3 vector and generated passwords), and accept or refuse exactly the
passwords scramp's SASLprep (RFC 4013) accepts or refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scramp import ScramException
from scramp.utils import saslprep

from hatchway.errors import InvalidMessage
from hatchway.login import STATIC_DIR as STATIC
from hatchway.login import saslprep_tables
from hatchway.login.scram import (
    ScramClient,
    ScramServerExchange,
    ScramVerifier,
    UnusablePassword,
    make_verifier,
)

HARNESS = Path(__file__).resolve().parent / "scram_harness.mjs"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "scram"
NODE = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
REF = "hwl1.session-reference-xyz"
SALT = bytes(range(16))


class Node:
    """One node process running the harness; one JSON line each way per request."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if NODE is None:
        # Same rule as tests/conftest.py's require(): skip locally, fail in CI.
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node is required when CI=true but is not available")
        pytest.skip("node not available")
    proc = subprocess.Popen(
        [NODE, str(HARNESS), str(STATIC / "scram.js")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        yield Node(proc)
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


@pytest.fixture(scope="module")
def verifier_cache() -> dict[str, ScramVerifier]:
    return {}


def python_prep(text: str) -> str | None:
    try:
        return str(saslprep(text))
    except ScramException:
        return None


def test_tables_are_generated_from_pythons_stringprep() -> None:
    shipped = (STATIC / "saslprep-tables.js").read_text(encoding="utf-8")
    assert shipped == saslprep_tables.render(), (
        "regenerate: python -m hatchway.login.saslprep_tables"
    )


def test_rfc7677_vector(node: Node) -> None:
    v = json.loads((VECTORS / "rfc7677.json").read_text(encoding="utf-8"))
    got = node.ask(
        op="exchange",
        ref=v["username"],
        password=v["password"],
        clientNonce=v["client_nonce"],
        serverFirst=v["server_first"],
        serverFinal=v["server_final"],
    )
    assert got == {
        "ok": True,
        "clientFirst": v["client_first"],
        "clientFinal": v["client_final"],
        "verified": True,
    }


def python_exchange(password: str, client_nonce: str) -> dict[str, str]:
    verifier = make_verifier(password, random=lambda n: SALT[:n], iterations=4096)
    server = ScramServerExchange(REF, verifier, random=lambda n: b"\x01" * n)
    client = ScramClient(REF, password, random=lambda n: b"", client_nonce=client_nonce)
    first = client.first()
    server_first = server.start(first)
    final = client.final(server_first)
    server_final = server.finish(final)
    return {
        "first": first,
        "server_first": server_first,
        "final": final,
        "server_final": server_final,
    }


def assert_same_exchange(node: Node, password: str, client_nonce: str = "fixedClientNonce") -> None:
    try:
        py = python_exchange(password, client_nonce)
    except UnusablePassword:
        got = node.ask(
            op="exchange",
            ref=REF,
            password=password,
            clientNonce=client_nonce,
            serverFirst="r=x,s=AAAAAAAAAAAAAAAA,i=4096",
            serverFinal="v=AAAA",
        )
        assert got == {"ok": False, "error": "SaslprepError"}
        return
    got = node.ask(
        op="exchange",
        ref=REF,
        password=password,
        clientNonce=client_nonce,
        serverFirst=py["server_first"],
        serverFinal=py["server_final"],
    )
    assert got == {
        "ok": True,
        "clientFirst": py["first"],
        "clientFinal": py["final"],
        "verified": True,
    }


@pytest.mark.parametrize(
    "password",
    [
        "pencil",
        "p\u00a0ss word",  # U+00A0 maps to a space
        "soft\u00adhyphen",  # U+00AD maps to nothing
        "\u2168",  # ROMAN NUMERAL NINE -> "IX" by NFKC
        "\ufb01ne",  # fi ligature
        "Ｆｕｌｌｗｉｄｔｈ",
        "caf\u0065\u0301",  # combining acute composes
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",  # Arabic (R/AL throughout)
        "пароль",
        "密码",
        "\U0001f511 key",  # astral, assigned after 3.2: refused by both
        chr(0x2F868),  # Corrigendum 4 ideograph: Unicode 3.2 mapping
        "\u0627abc\u0628",  # bidi: L inside R/AL -> refused
        "\u0627abc",  # bidi: must end in R/AL -> refused
        "bell\u0007",  # control
        "\ue000",  # private use
        "\u200e",  # LRM, C.8
        "\u0340",  # C.8 before NFKC, U+0300 after: allowed
        "\u00ad",  # empty after mapping
        "",
    ],
)
def test_same_messages_as_python(node: Node, password: str) -> None:
    assert_same_exchange(node, password)


interesting = st.sampled_from(
    [
        "\u00a0",
        "\u00ad",
        "\u2000",
        "\u3000",
        "\ufeff",
        "\u200b",
        "\u0301",
        "\u0627",
        "\u05d0",
        "\u1680",
        "\u2168",
        "\ufb01",
        "\uff21",
        "\u0007",
        "\ue000",
        "\ufffd",
        "\u202e",
        "A",
        " ",
    ]
)
passwords = st.lists(
    st.one_of(st.characters(exclude_categories=["Cs"]), interesting), max_size=16
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords)
def test_generated_passwords_same_messages(node: Node, password: str) -> None:
    assert_same_exchange(node, password)


@settings(max_examples=500, deadline=None)
@given(text=passwords)
def test_generated_saslprep_agrees(node: Node, text: str) -> None:
    want = python_prep(text)
    got = node.ask(op="saslprep", input=text)
    if want is None:
        assert got == {"ok": False, "error": "SaslprepError"}
    else:
        assert got == {"ok": True, "value": want}


def test_every_single_code_point_agrees(node: Node) -> None:
    """Exhaustive: saslprep of each of the 1,114,112 code points, JS against scramp."""
    from stringprep import in_table_a1

    def result(cp: int) -> str:
        c = chr(cp)
        if in_table_a1(c):
            return "!"  # an unassigned code point survives 3.2 NFKC and is refused
        out = python_prep(c)
        if out is None:
            return "!"
        return "=" if out == c else " ".join(f"{ord(x):x}" for x in out)

    want: list[list[Any]] = []
    for cp in range(0x110000):
        r = result(cp)
        if want and want[-1][2] == r and want[-1][1] == cp - 1:
            want[-1][1] = cp
        else:
            want.append([cp, cp, r])
    got = node.ask(op="sweep")["runs"]
    assert got == want
    assert unicodedata.ucd_3_2_0.unidata_version == "3.2.0"


def test_forged_server_signature_is_refused(node: Node) -> None:
    py = python_exchange("pencil", "nonce1")
    got = node.ask(
        op="exchange",
        ref=REF,
        password="pencil",
        clientNonce="nonce1",
        serverFirst=py["server_first"],
        serverFinal="v=" + "A" * 43 + "=",
    )
    assert got["ok"] is True and got["verified"] is False


@pytest.mark.parametrize(
    "server_first",
    [
        "r=othernonce,s=AAAAAAAAAAAAAAAA,i=4096",
        "r=nonce1x,s=AAAAAAAAAAAAAAAA,i=4095",
        "r=nonce1x,s=AAAAAAAAAAAAAAAA,i=04096",
        "r=nonce1x,s=AAAA,i=4096",
        "r=nonce1x,s=A!AA,i=4096",
        "e=other-error",
        "m=ext,r=nonce1x,s=AAAAAAAAAAAAAAAA,i=4096",
        "r=nonce1x,r=nonce1y,s=AAAAAAAAAAAAAAAA,i=4096",
    ],
)
def test_bad_server_first_is_refused_like_python(node: Node, server_first: str) -> None:
    client = ScramClient(REF, "pencil", random=lambda n: b"", client_nonce="nonce1")
    client.first()
    with pytest.raises(InvalidMessage):
        client.final(server_first)
    got = node.ask(
        op="exchange",
        ref=REF,
        password="pencil",
        clientNonce="nonce1",
        serverFirst=server_first,
        serverFinal="v=AAAA",
    )
    assert got == {"ok": False, "error": "ScramError"}
