"""``hatchway clients …`` (issue 8 §1): each command prints one JSON object with --json,
the generated secret appears once and is stored only as a hash, and errors exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hatchway.cli.clients import app
from hatchway.store import Store

GOOD_JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "rs1",
                       "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}  # fmt: skip


def _run(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    # In process (typer's runner) rather than a subprocess per command: the
    # same click entry point, minus a second of interpreter start-up each.
    done = CliRunner().invoke(app, [*args, "--json"], env={"HATCHWAY_DATA_DIR": str(data_dir)})
    lines = done.stdout.splitlines()
    assert len(lines) == 1, (done.stdout, done.exception)  # exactly one JSON object
    result: dict[str, Any] = json.loads(lines[0])
    return done.exit_code, result


def test_clients_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rc, added = _run(
        data,
        "add",
        "living-room-tv",
        "--name",
        "Living-room TV app",
        "--scope",
        "profile",
        "--scope",
        "offline_access",
        "--access-ttl",
        "120",
        "--refresh-ttl",
        "86400",
    )
    assert rc == 0
    assert added["client_type"] == "public" and added["token_endpoint_auth_method"] == "none"
    assert added["scopes"] == ["profile", "offline_access"]
    assert added["anti_phishing"] == "confirm-code"
    assert (added["access_ttl"], added["refresh_ttl"]) == (120, 86400)
    assert "client_secret" not in added

    rc, conf = _run(data, "add", "rs", "--name", "Resource server", "--confidential")
    assert rc == 0 and conf["token_endpoint_auth_method"] == "client_secret_basic"
    secret = conf["client_secret"]
    assert len(secret) >= 43
    rc, shown = _run(data, "show", "rs")
    assert rc == 0 and "client_secret" not in shown and shown["has_secret"] is True
    with Store.open(f"sqlite:///{data / 'hatchway.sqlite3'}") as store:
        stored = store.get_client("rs")
        assert stored is not None and stored.verify_secret(secret)
        with store.engine.connect() as conn:
            dump = "\n".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM clients"))
        assert secret not in dump

    jwks = tmp_path / "rs.jwks.json"
    jwks.write_text(json.dumps(GOOD_JWKS))
    rc, jwt_client = _run(
        data, "add", "rs-jwt", "--name", "RS (JWT)", "--auth-method", "private_key_jwt",
        "--jwks", str(jwks),
    )  # fmt: skip
    assert rc == 0 and jwt_client["jwks"] == GOOD_JWKS and "client_secret" not in jwt_client

    rc, listed = _run(data, "list")
    ids = [c["client_id"] for c in listed["clients"]]
    # hatchway-cli is there from the first use of the data dir.
    assert ids == ["hatchway-cli", "living-room-tv", "rs", "rs-jwt"]

    assert _run(data, "disable", "living-room-tv")[1]["enabled"] is False
    assert _run(data, "enable", "living-room-tv")[1]["enabled"] is True
    assert _run(data, "remove", "rs") == (0, {"client_id": "rs", "removed": True})
    rc, missing = _run(data, "show", "rs")
    assert rc != 0 and "error" in missing


def test_bad_registrations_fail_with_one_json_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _run(data, "add", "tv", "--name", "TV")[0] == 0
    for args in (
        ["add", "tv", "--name", "Again"],  # taken
        ["add", "two words", "--name", "X"],
        ["add", "x", "--name", "X", "--scope", 'in"valid'],
        ["add", "x", "--name", "X", "--access-ttl", "5"],
        ["add", "x", "--name", "X", "--auth-method", "private_key_jwt"],  # no --jwks
        ["add", "x", "--name", "X", "--confidential", "--auth-method", "none"],
        ["remove", "ghost"],
        ["disable", "ghost"],
    ):
        rc, answer = _run(data, *args)
        assert rc != 0 and set(answer) == {"error"}, args
