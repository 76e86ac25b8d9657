"""``hatchway firmware`` end to end on files: keygen, sign, verify, trust, keys (issue 9)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hatchway.cli.firmware import app, parse_duration
from hatchway.firmware import TrustStore
from hatchway.store import Store
from tests.firmware.conftest import image_bytes


def _run(*args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # exactly one JSON object
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    out = tmp_path / "fw-signing.jwk"
    _run("keygen", "--out", str(out))
    return out


@pytest.fixture
def imagefile(tmp_path: Path) -> Path:
    path = tmp_path / "meter-2.1.0.bin"
    path.write_bytes(image_bytes(150_000))
    return path


def _sign(keyfile: Path, imagefile: Path, out: Path, *extra: str) -> dict[str, Any]:
    return _run(
        "sign",
        "--key",
        str(keyfile),
        "--image",
        str(imagefile),
        "--version",
        "2.1.0",
        "--sequence",
        "21",
        "--class",
        "acme-meter-v2",
        "--out",
        str(out),
        *extra,
    )


def test_keygen_writes_a_private_0600_and_a_public_key(keyfile: Path) -> None:
    public = keyfile.with_name("fw-signing.pub.jwk")
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert "d" in json.loads(keyfile.read_text()) and "d" not in json.loads(public.read_text())
    assert json.loads(public.read_text())["crv"] == "Ed25519"
    again = _run("keygen", "--out", str(keyfile), code=1)
    assert "refusing to overwrite" in again["error"]


def test_sign_then_verify_with_the_image(keyfile: Path, imagefile: Path, tmp_path: Path) -> None:
    out = tmp_path / "2.1.0.manifest"
    signed = _sign(keyfile, imagefile, out, "--expires-in", "7d", "--min-version", "2.0.0")
    assert signed["chunks"] == 3 and signed["size"] == 150_000
    assert signed["expires_at"] - signed["issued_at"] == 7 * 86400
    pub = str(keyfile.with_name("fw-signing.pub.jwk"))
    verified = _run(
        "verify",
        "--trust",
        pub,
        str(out),
        "--image",
        str(imagefile),
        "--class",
        "acme-meter-v2",
        "--current-sequence",
        "20",
        "--current-version",
        "2.0.0",
    )
    assert verified["valid"] and verified["image_checked"]
    assert verified["sha256"] == signed["sha256"] and verified["kid"] == signed["kid"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (("--class", "acme-meter-v3"), "wrong_class"),
        (("--current-sequence", "21"), "rollback"),
        (("--current-version", "1.9"), "below_min_version"),
    ],
)
def test_verify_reports_the_refusal_reason(
    keyfile: Path, imagefile: Path, tmp_path: Path, extra: tuple[str, ...], reason: str
) -> None:
    out = tmp_path / "m"
    _sign(keyfile, imagefile, out, "--min-version", "2.0.0")
    pub = str(keyfile.with_name("fw-signing.pub.jwk"))
    refused = _run("verify", "--trust", pub, str(out), *extra, code=1)
    assert refused["reason"] == reason


def test_verify_refuses_a_changed_image_and_an_untrusted_key(
    keyfile: Path, imagefile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m"
    _sign(keyfile, imagefile, out)
    pub = str(keyfile.with_name("fw-signing.pub.jwk"))
    changed = tmp_path / "changed.bin"
    data = bytearray(imagefile.read_bytes())
    data[70_000] ^= 1
    changed.write_bytes(bytes(data))
    refused = _run("verify", "--trust", pub, str(out), "--image", str(changed), code=1)
    assert refused["reason"] == "digest_mismatch" and "chunk 1" in refused["detail"]
    other = tmp_path / "other.jwk"
    _run("keygen", "--out", str(other))
    refused = _run("verify", "--trust", str(tmp_path / "other.pub.jwk"), str(out), code=1)
    assert refused["reason"] == "untrusted_key"
    refused = _run("verify", "--trust", str(keyfile), str(out), code=2)
    assert "private key" in refused["error"]


def test_sign_with_rotation_statement(keyfile: Path, imagefile: Path, tmp_path: Path) -> None:
    new = tmp_path / "fw-2.jwk"
    made = _run("keygen", "--out", str(new))
    out = tmp_path / "m"
    signed = _sign(keyfile, imagefile, out, "--rotate-to", str(new), "--overlap", "14d")
    assert signed["rotate_to"] == made["kid"]
    pub = str(keyfile.with_name("fw-signing.pub.jwk"))
    assert _run("verify", "--trust", pub, str(out))["rotate_to"] == made["kid"]


def test_a_legacy_trust_file_is_imported_once(keyfile: Path, tmp_path: Path) -> None:
    """Before revision 0006 the trust store was firmware-trust.json: merged in, then renamed."""
    from hatchway.firmware import files as fwfiles

    data_dir = tmp_path / "data"
    key = fwfiles.read_public_key(keyfile.with_name("fw-signing.pub.jwk"))
    fwfiles.save_trust(data_dir, TrustStore.of(key, now=5))
    listed = _run("keys", "list", "--data-dir", str(data_dir))
    assert [(k["kid"], k["status"]) for k in listed["keys"]] == [(key.kid, "active")]
    assert not (data_dir / "firmware-trust.json").exists()
    assert (data_dir / "firmware-trust.json.imported").is_file()


def test_trust_list_retire_revoke_in_the_data_dir(keyfile: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    pub = str(keyfile.with_name("fw-signing.pub.jwk"))
    trusted = _run("trust", pub, "--data-dir", str(data_dir))
    kid = trusted["kid"]
    assert _run("trust", pub, "--data-dir", str(data_dir))["kid"] == kid  # idempotent
    listed = _run("keys", "list", "--data-dir", str(data_dir))
    assert [(k["kid"], k["status"]) for k in listed["keys"]] == [(kid, "active")]
    retired = _run("keys", "retire", kid, "--overlap", "1d", "--data-dir", str(data_dir))
    assert retired["status"] == "retired"
    _run("keys", "revoke", kid, "--reason", "laptop stolen", "--data-dir", str(data_dir))
    with Store.open(f"sqlite:///{data_dir}/hatchway.sqlite3") as db:
        store = db.firmware_trust()
    entry = store.get(kid)
    assert entry is not None and entry.status == "revoked" and entry.reason == "laptop stolen"
    assert not store.can_publish(kid)
    assert not (data_dir / "firmware-trust.json").exists()  # the store holds it now
    again = _run("trust", pub, "--data-dir", str(data_dir), code=2)
    assert "revoked" in again["error"]
    missing = _run("keys", "revoke", "nope", "--data-dir", str(data_dir), code=2)
    assert "no firmware key" in missing["error"]


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("2w", 1209600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "30", "d", "1.5d", "30 days", "-1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_registered_on_the_hatchway_command() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    done = subprocess.run(
        [sys.executable, "-m", "hatchway", "firmware", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("keygen", "sign", "verify", "trust", "keys", "publish", "rollout", "status"):
        assert command in done.stdout


def test_human_key_list_escapes_an_operator_supplied_reason(keyfile: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kid = _run("trust", str(keyfile.with_name("fw-signing.pub.jwk")), "--data-dir", str(data_dir))[
        "kid"
    ]
    _run("keys", "revoke", kid, "--reason", "stolen\u009b31m\u202e", "--data-dir", str(data_dir))
    result = CliRunner().invoke(app, ["keys", "list", "--data-dir", str(data_dir)])
    assert result.exit_code == 0
    assert kid in result.stdout  # whole, on one line
    assert "\u009b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\u009b31m\\u202e" in result.stdout
