"""Issue 9 server side against a real ``hatchway serve``: publish, rollout, offer, chunks, reports.

Two enrolled devices in a group, a rollout in two waves with ``--max-failures 0``:
the first device gets the offer in the reply to its poll, unwraps the content key
with its own key, fetches and checks every chunk over the plain listener and
reports up to ``confirmed``; that opens the second wave; the second device refuses
and the rollout pauses itself. The operator side is the real CLI on the server's
data dir. The device side talks the wire contract directly (the SDK's update loop
is another branch's).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hatchway.cli.main import app
from hatchway.config import settings_from_env
from hatchway.device import Device
from hatchway.firmware import (
    ChunkAssembler,
    ChunkCipher,
    DevicePosition,
    MemoryImage,
    TrustStore,
    check_manifest,
    unwrap_content_key,
)
from hatchway.firmware import files as fwfiles
from hatchway.firmware.manifest import Manifest
from hatchway.firmware.wire import RELEASE_ID
from hatchway.msgsec import MessageType
from hatchway.server.context import ServerContext
from hatchway.server.edge import UNIFORM_ERROR
from hatchway.server.process import ServerProcess
from tests.firmware.conftest import image_bytes

pytestmark = pytest.mark.e2e

CLASS = "acme-meter-v2"


def cli(*args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    value = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def poll(device: Device) -> Any:
    expect = {MessageType.ACK, MessageType.FIRMWARE_UPDATE, MessageType.COMMAND}
    return device._exchange(MessageType.POLL, {}, expect)


def report(device: Device, release: str, state: str, **extra: Any) -> str:
    body = {"release": release, "state": state, **extra}
    ack = device._exchange(MessageType.FIRMWARE_REPORT, body, {MessageType.ACK})
    return str(ack.body["status"])


def download(
    server: ServerProcess, device: Device, offer: dict[str, Any], trust: TrustStore
) -> Manifest:
    manifest = check_manifest(
        offer["manifest"],
        trust=trust,
        position=DevicePosition(CLASS, 20, "2.0.0"),
        now=time.time(),
    )
    key = unwrap_content_key(offer["key"], device._decryption, manifest.sha256)
    cipher = ChunkCipher(key, manifest.sha256)
    assembler = ChunkAssembler(manifest, MemoryImage(manifest.size))
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        for index in range(manifest.chunk_count):
            got = client.get(f"{offer['chunks']}{index}")
            assert got.status_code == 200
            assert got.headers["content-type"] == "application/octet-stream"
            assert "immutable" in got.headers["cache-control"]
            again = client.get(
                f"{offer['chunks']}{index}", headers={"if-none-match": got.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""
            assembler.receive(index, cipher.open(index, got.content))
    assembler.finish()
    assert assembler.verified
    return manifest


def test_publish_rollout_offer_download_report_pause(server: ServerProcess, tmp_path: Path) -> None:
    data = ["--data-dir", str(server.data_dir)]
    keyfile = tmp_path / "fw.jwk"
    cli("firmware", "keygen", "--out", str(keyfile))
    pub = tmp_path / "fw.pub.jwk"
    # The device's own trust store, as enrolment and the metadata give it (checked below).
    trust = TrustStore.of(fwfiles.read_public_key(pub))
    image = tmp_path / "meter.bin"
    image.write_bytes(image_bytes(3 * 65536 + 999))
    manifest = tmp_path / "2.1.0.manifest"
    cli(
        "firmware", "sign", "--key", str(keyfile), "--image", str(image), "--version", "2.1.0",
        "--sequence", "21", "--class", CLASS, "--out", str(manifest),
    )  # fmt: skip
    cli("firmware", "trust", str(pub), *data)
    published = cli("firmware", "publish", str(manifest), str(image), *data)
    release = published["release"]
    assert RELEASE_ID.fullmatch(release) and published["chunks"] == 4

    ctx = ServerContext.create(settings_from_env({"HATCHWAY_DATA_DIR": str(server.data_dir)}))
    devices: list[Device] = []
    try:
        for name in ("meter-1", "meter-2"):
            secret = ctx.enrolment.provision(name)
            devices.append(
                Device.enroll(
                    server=server.https_url,
                    device_id=name,
                    secret=secret,
                    state_path=tmp_path / f"{name}.json",
                    ca_file=server.ca_file,
                    retry_for=10,
                )
            )
        one, two = devices
        meta = httpx.get(
            server.https_url + "/.well-known/oauth-authorization-server",
            verify=ssl.create_default_context(cafile=str(server.ca_file)),
        ).json()["hatchway_firmware"]
        assert [k["jwk"]["kid"] for k in meta["keys"]] == [fwfiles.read_public_key(pub).kid]
        assert meta["keys"][0]["status"] == "active"
        assert meta["chunks_endpoint"] == server.http_url + "/fw/"

        cli("groups", "add", "pilot", "meter-1", "meter-2", *data)
        started = cli(
            "firmware", "rollout", "2.1.0", "--group", "pilot", "--waves", "1,2",
            "--confirm-within", "600", *data,
        )  # fmt: skip
        assert started["offered"] == ["meter-1"] and started["state"] == "active"

        assert poll(two).typ is MessageType.ACK  # not in the first wave
        offer = poll(one)
        assert offer.typ is MessageType.FIRMWARE_UPDATE
        body = offer.body
        assert body["release"] == release and body["chunks"] == f"/fw/{release}/"
        assert body["manifest"] == manifest.read_text().strip()
        assert body["confirm_within"] == 600
        assert poll(one).typ is MessageType.ACK  # delivered once

        download(server, one, body, trust)
        assert report(one, release, "downloading", progress=50) == "recorded"
        status = cli("firmware", "status", "2.1.0", *data)
        assert status["devices"][0]["progress"] == 50
        for state in ("verified", "installed", "confirmed"):
            assert report(one, release, state) == "recorded"
        assert report(one, release, "confirmed") == "duplicate"
        assert report(one, release, "downloading", progress=1) == "refused"

        # Wave 1 is final: wave 2 (meter-2) is offered on its next poll.
        second = poll(two)
        assert second.typ is MessageType.FIRMWARE_UPDATE
        assert report(two, release, "refused", reason="rollback") == "recorded"
        status = cli("firmware", "status", "2.1.0", *data)
        assert status["rollout"]["state"] == "paused"  # 1 failure > --max-failures 0
        assert status["counts"]["confirmed"] == 1 and status["counts"]["refused"] == 1
        assert [d["reason"] for d in status["devices"]] == [None, "rollback"]
        assert cli("firmware", "resume", "2.1.0", *data)["state"] == "completed"

        # HEAD answers the headers only; a chunk file cut short answers the uniform
        # 404 (and logs why), never a short chunk.
        with httpx.Client(base_url=server.http_url, timeout=10) as client:
            head = client.head(f"/fw/{release}/3")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(999 + 28)
            with (server.data_dir / "firmware" / f"{release}.chunks").open("r+b") as fh:
                fh.truncate(100)
            cut = client.get(f"/fw/{release}/3")
            assert (cut.status_code, cut.content) == (404, UNIFORM_ERROR)
    finally:
        for device in devices:
            device.close()
        ctx.close()


def test_chunk_endpoint_answers_unknowns_uniformly(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        for path in ("/fw/nope/0", "/fw/nope/", "/fw/../0", "/fw/x/007", "/fw/x/99999", "/fw/"):
            got = client.get(path)
            assert (got.status_code, got.content) == (404, UNIFORM_ERROR), path
        assert client.post("/fw/x/0").status_code in (404, 405)
        assert client.get("/healthz").status_code == 200
