"""``hatchway firmware publish`` refusals, groups and rollout commands on a store (issue 9).

Attack-style: a manifest under a revoked key, under a retired key (still accepted by
devices during the overlap, but never published under), for an image whose digest
differs, and one signed by the server's own message key: each refused with exit 2,
and nothing stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hatchway.cli.main import app
from hatchway.firmware import MANIFEST_TYP, ChunkCipher, Manifest, sign_manifest
from hatchway.msgsec import _jose
from hatchway.msgsec._codec import dumps
from hatchway.server.datadir import ensure_data_dir
from hatchway.store import Store
from tests.firmware.conftest import fw_key, image_bytes, make_manifest

CLASS = "acme-meter-v2"


def cli(*args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """A data dir that trusts one firmware key, an image and its manifest files."""
    data_dir = tmp_path / "data"
    key = fw_key()
    pub = tmp_path / "fw.pub.jwk"
    pub.write_text(json.dumps(key.public().to_jwk()))
    cli("firmware", "trust", str(pub), "--data-dir", str(data_dir))
    image = image_bytes(2 * 65536 + 77)
    (tmp_path / "img.bin").write_bytes(image)
    return {"data": data_dir, "key": key, "image": image, "tmp": tmp_path}


def write_manifest(env: dict[str, Any], name: str, manifest: Manifest, key: Any = None) -> Path:
    path = env["tmp"] / name
    path.write_bytes(sign_manifest(manifest, key or env["key"]))
    return path


def fresh(env: dict[str, Any], **over: Any) -> Manifest:
    now = int(time.time())
    return make_manifest(env["image"], issued_at=now - 60, expires_at=now + 86400, **over)


def publish(env: dict[str, Any], manifest: Path, code: int = 0) -> dict[str, Any]:
    image = str(env["tmp"] / "img.bin")
    return cli(
        "firmware", "publish", str(manifest), image, "--data-dir", str(env["data"]), code=code
    )


def releases(env: dict[str, Any]) -> list[str]:
    with Store.open(f"sqlite:///{env['data']}/hatchway.sqlite3") as store:
        return [r.release_id for r in store.find_releases()]


def test_publish_stores_encrypted_chunks_in_the_store(env: dict[str, Any]) -> None:
    out = publish(env, write_manifest(env, "m", fresh(env)))
    assert out["chunks"] == 3 and out["class"] == CLASS and out["version"] == "2.1.0"
    with Store.open(f"sqlite:///{env['data']}/hatchway.sqlite3") as store:
        sealed = list(store.sealed_chunks(out["release"]))
        record = store.get_release(out["release"])
    assert [len(s) for s in sealed] == [65536 + 28, 65536 + 28, 77 + 28]
    assert env["image"][:1000] not in b"".join(sealed)  # ciphertext only
    assert record is not None
    cipher = ChunkCipher(record.content_key, record.sha256)
    assert b"".join(cipher.open(i, s) for i, s in enumerate(sealed)) == env["image"]
    # Nothing in the data dir: every replica fills its own cache from the store.
    assert not (env["data"] / "firmware").exists()
    again = publish(env, write_manifest(env, "m2", fresh(env)), code=2)
    assert "already published" in again["error"]


def test_publish_refuses_a_revoked_key(env: dict[str, Any]) -> None:
    kid = env["key"].kid
    cli("firmware", "keys", "revoke", kid, "--reason", "stolen", "--data-dir", str(env["data"]))
    refused = publish(env, write_manifest(env, "m", fresh(env)), code=2)
    assert "revoked_key" in refused["error"]
    assert releases(env) == []


def test_publish_refuses_a_retired_key_even_inside_its_overlap(env: dict[str, Any]) -> None:
    kid = env["key"].kid
    cli("firmware", "keys", "retire", kid, "--overlap", "30d", "--data-dir", str(env["data"]))
    refused = publish(env, write_manifest(env, "m", fresh(env)), code=2)
    assert "retired" in refused["error"] and "nothing is published" in refused["error"]
    assert releases(env) == []


def test_publish_refuses_an_image_whose_digest_differs(env: dict[str, Any]) -> None:
    path = write_manifest(env, "m", fresh(env))
    changed = bytearray(env["image"])
    changed[70000] ^= 1
    (env["tmp"] / "img.bin").write_bytes(bytes(changed))
    refused = publish(env, path, code=2)
    assert "digests differ" in refused["error"]
    assert releases(env) == [] and not list((env["data"] / "firmware").glob("*"))


def test_publish_refuses_a_manifest_signed_by_the_servers_message_key(env: dict[str, Any]) -> None:
    server_key = ensure_data_dir(env["data"]).signing_key
    header = {"alg": server_key.alg.value, "kid": server_key.kid, "typ": MANIFEST_TYP}
    token = _jose.jws_encode(header, dumps(fresh(env).to_claims()), server_key.key)
    path = env["tmp"] / "forged"
    path.write_bytes(token)
    refused = publish(env, path, code=2)
    assert refused["error"] == "manifest refused: invalid"
    # Even a key id the server trusts does not let another algorithm in.
    header["kid"] = env["key"].kid
    path.write_bytes(_jose.jws_encode(header, dumps(fresh(env).to_claims()), server_key.key))
    assert publish(env, path, code=2)["error"] == "manifest refused: invalid"
    assert releases(env) == []


def test_publish_refuses_an_expired_or_untrusted_manifest(env: dict[str, Any]) -> None:
    now = int(time.time())
    old = make_manifest(env["image"], issued_at=now - 200, expires_at=now - 100)
    assert "expired" in publish(env, write_manifest(env, "old", old), code=2)["error"]
    other = fw_key(b"someone else")
    refused = publish(env, write_manifest(env, "other", fresh(env), other), code=2)
    assert "untrusted_key" in refused["error"]


def enrolled(data_dir: Path, *names: str) -> None:
    with Store.open(f"sqlite:///{data_dir}/hatchway.sqlite3") as store:
        for name in names:
            store.provision_device(name, "h", now=1.0)
            store.consume_enrolment_secret(name, now=2.0)
            store.complete_enrolment(
                name,
                signing_jwk={"kty": "OKP", "crv": "Ed25519", "x": name, "kid": "k" + name},
                encryption_jwk={"kty": "OKP", "crv": "X25519", "x": "e" + name},
                suite={"sign": "EdDSA", "key": "ECDH-ES", "enc": "A256GCM"},
                certificate_pem="-",
                now=3.0,
            )


def test_groups_rollout_pause_cancel_and_status_json(env: dict[str, Any]) -> None:
    data = ["--data-dir", str(env["data"])]
    release = publish(env, write_manifest(env, "m", fresh(env)))["release"]
    other_class = write_manifest(env, "m2", fresh(env, device_class="acme-meter-v3"))
    publish(env, other_class)
    enrolled(env["data"], "a", "b", "c")
    assert cli("groups", "add", "pilot", "a", "b", "c", *data)["members"] == ["a", "b", "c"]
    assert "ghost" in cli("groups", "add", "pilot", "ghost", *data, code=1)["error"]
    assert cli("groups", "list", *data) == {"groups": {"pilot": ["a", "b", "c"]}}

    ambiguous = cli("firmware", "rollout", "2.1.0", "--group", "pilot", *data, code=2)
    assert "pass --class" in ambiguous["error"] and "acme-meter-v3" in ambiguous["error"]
    assert "no published release" in cli("firmware", "status", "9.9", *data, code=2)["error"]
    bad = ["--class", CLASS, "--waves", "50%,10%"]
    assert (
        "shrink"
        in cli("firmware", "rollout", "2.1.0", "--group", "pilot", *bad, *data, code=2)["error"]
    )
    started = cli(
        "firmware", "rollout", "2.1.0", "--class", CLASS, "--group", "pilot",
        "--waves", "34%,100%", "--max-failures", "1", *data,
    )  # fmt: skip
    assert started["waves"] == [2, 3] and started["offered"] == ["a", "b"]
    # A release id works as VERSION too, and is never ambiguous.
    assert cli("firmware", "pause", release, *data)["state"] == "paused"
    assert "cannot be paused" in cli("firmware", "pause", release, *data, code=1)["error"]
    status = cli("firmware", "status", release, *data)
    assert status["rollout"]["state"] == "paused" and status["rollout"]["wave"] == 1
    assert status["counts"]["offered"] == 2 and status["counts"]["pending"] == 1
    assert [d["state"] for d in status["devices"]] == ["offered", "offered", "pending"]
    cancelled = cli("firmware", "cancel", release, *data)
    assert cancelled["state"] == "cancelled"
    status = cli("firmware", "status", release, *data)
    assert status["counts"]["withdrawn"] == 3  # nothing was delivered yet

    human = CliRunner().invoke(app, ["firmware", "status", release, *data])
    assert human.exit_code == 0 and "cancelled" in human.stdout and "withdrawn 3" in human.stdout
    watch = cli("firmware", "status", release, "--watch", *data, code=2)
    assert "--watch" in watch["error"]
    # The live view ends by itself once the rollout is over.
    live = CliRunner().invoke(app, ["firmware", "status", release, "--watch", *data])
    assert live.exit_code == 0 and "withdrawn 3" in live.stdout
    assert cli("groups", "remove", "pilot", "--all", *data)["removed"] == 3
