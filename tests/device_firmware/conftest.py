"""A really published image, a device's slot directory on disk and a test installer.

Nothing here stands in for a hatchway component: the image is signed with a real
firmware key, sealed per chunk with ``ChunkCipher`` and its content key wrapped to
the device's real decryption key; the updater writes real slot files. The chunk
source is an in-memory server (it can corrupt or drop a chunk), the installer a
recording implementation of the ``Installer`` protocol, and the identity a JSON file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hatchway.device.firmware import (
    FetchError,
    FirmwareIdentity,
    FirmwareOffer,
    InstallError,
    InstallTarget,
    SlotDir,
    Updater,
)
from hatchway.firmware import (
    ChunkCipher,
    TrustStore,
    new_content_key,
    sign_manifest,
    split_chunks,
    wrap_content_key,
)
from hatchway.msgsec.keys import DecryptionKey, SigningKey, generate_decryption_key
from hatchway.pki.files import write_private
from hatchway.runtime import FrozenClock, SeededRandom
from tests.firmware.conftest import DAY, NOW, fw_key, image_bytes, make_manifest

CLASS = "acme-meter-v2"


class Killed(BaseException):
    """A simulated kill -9: nothing in the updater catches it."""


@dataclass
class Release:
    """One published image: manifest, sealed chunks, the content key."""

    image: bytes
    manifest: bytes
    sealed: list[bytes]
    content_key: bytes
    sha256: bytes
    release_id: str

    def offer(self, device_key: DecryptionKey, **over: Any) -> FirmwareOffer:
        wrapped = wrap_content_key(
            self.content_key, self.sha256, device_key.public(), SeededRandom(b"wrap")
        ).decode()
        fields: dict[str, Any] = {
            "release": self.release_id,
            "manifest": self.manifest.decode(),
            "key": wrapped,
            "chunks": f"/fw/{self.release_id}/",
            "confirm_within": 600,
        }
        fields.update(over)
        return FirmwareOffer(**fields)


def publish(
    image: bytes, key: SigningKey | None = None, release_id: str = "rel-21", **over: Any
) -> Release:
    manifest = make_manifest(image, **over)
    token = sign_manifest(manifest, key or fw_key())
    content_key = new_content_key(SeededRandom(b"ck" + release_id.encode()))
    cipher = ChunkCipher(content_key, manifest.sha256)
    rnd = SeededRandom(b"iv")
    sealed = [cipher.seal(i, c, rnd) for i, c in enumerate(split_chunks(image))]
    return Release(image, token, sealed, content_key, manifest.sha256, release_id)


class ChunkServer:
    """``fetch(chunks, index)`` from a release, with faults on demand."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.fetches: list[int] = []
        self.flip_once: set[int] = set()  # corrupt these chunks' first delivery
        self.always_bad: set[int] = set()
        self.down_after: int | None = None  # fetches served before the "network" fails
        self.kill_at: int | None = None  # raise Killed on this fetch number

    def __call__(self, chunks: str, index: int) -> bytes:
        assert chunks == f"/fw/{self.release.release_id}/"
        n = len(self.fetches)
        if self.kill_at is not None and n == self.kill_at:
            raise Killed(f"killed at fetch {n}")
        if self.down_after is not None and n >= self.down_after:
            raise FetchError("connection refused")
        self.fetches.append(index)
        blob = bytearray(self.release.sealed[index])
        if index in self.flip_once or index in self.always_bad:
            self.flip_once.discard(index)
            blob[len(blob) // 2] ^= 0x01
        return bytes(blob)


@dataclass
class RecordingInstaller:
    """An ``Installer`` that copies the image into a "system" dir and records each step."""

    system: Path
    healthy: bool = True
    fail: set[str] = field(default_factory=set)
    kill_in: set[str] = field(default_factory=set)
    clock: FrozenClock | None = None
    health_takes: float = 0.0
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _step(self, name: str, target: InstallTarget) -> None:
        self.calls.append((name, target.slot))
        if name in self.kill_in:
            self.kill_in.discard(name)
            raise Killed(f"killed in {name}")
        if name in self.fail:
            raise InstallError(f"{name} failed")

    def install(self, target: InstallTarget) -> None:
        self._step("install", target)
        (self.system / f"installed-{target.slot}").write_bytes(target.image.read_bytes())

    def boot(self, target: InstallTarget) -> None:
        self._step("boot", target)
        (self.system / "running").write_text(target.slot)

    def health_check(self, target: InstallTarget, timeout: float) -> bool:
        self._step("health", target)
        if self.clock is not None:
            self.clock.advance(self.health_takes)
        return self.healthy

    def confirm(self, target: InstallTarget) -> None:
        self._step("confirm", target)

    def rollback(self, target: InstallTarget) -> None:
        self._step("rollback", target)
        (self.system / "running").write_text(target.slot)

    def steps(self) -> list[str]:
        return [name for name, _ in self.calls]


class IdentityFile:
    """The device's firmware identity in a JSON file (the SDK keeps it in the state file)."""

    def __init__(self, path: Path, initial: FirmwareIdentity | None = None) -> None:
        self.path = path
        if initial is not None and not path.exists():  # a restarted device keeps its own
            self.commit(initial)

    def __call__(self) -> FirmwareIdentity:
        return FirmwareIdentity.from_json(json.loads(self.path.read_text()))

    def commit(self, identity: FirmwareIdentity) -> None:
        write_private(self.path, json.dumps(identity.to_json()).encode())


class Reports:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.up = True
        self.kill_on: str | None = None  # die while sending a report of this state

    def __call__(self, body: dict[str, Any]) -> bool:
        if body["state"] == self.kill_on:
            self.kill_on = None
            raise Killed(f"killed reporting {body['state']}")
        if not self.up:
            return False
        self.bodies.append(body)
        return True

    def states(self) -> list[str]:
        return [b["state"] for b in self.bodies]

    def last(self) -> dict[str, Any]:
        return self.bodies[-1]


@dataclass
class Rig:
    """Everything one device needs, rebuildable from disk (a restart)."""

    root: Path
    release: Release
    device_key: DecryptionKey
    identity: IdentityFile
    server: ChunkServer
    installer: RecordingInstaller
    reports: Reports
    clock: FrozenClock
    max_image_size: int | None = None

    @property
    def slots(self) -> SlotDir:
        return SlotDir(self.root / "meter-001.json.firmware")

    def updater(self) -> Updater:
        return Updater(
            self.slots,
            identity=self.identity,
            commit=self.identity.commit,
            decryption_key=self.device_key,
            installer=self.installer,
            fetch=self.server,
            report=self.reports,
            clock=self.clock,
            max_image_size=self.max_image_size,
        )

    def offer(self, **over: Any) -> FirmwareOffer:
        return self.release.offer(self.device_key, **over)


def make_rig(
    root: Path,
    image: bytes,
    *,
    trust: TrustStore | None = None,
    identity: FirmwareIdentity | None = None,
    **manifest: Any,
) -> Rig:
    (root / "system").mkdir(parents=True, exist_ok=True)
    trust = trust if trust is not None else TrustStore.of(fw_key().public(), now=NOW - DAY)
    ident = identity or FirmwareIdentity(CLASS, "2.0.0", 20, trust)
    clock = FrozenClock(NOW + 60)
    release = publish(image, **manifest)
    return Rig(
        root=root,
        release=release,
        device_key=generate_decryption_key("P-256", random=SeededRandom(b"device")),
        identity=IdentityFile(root / "identity.json", ident),
        server=ChunkServer(release),
        installer=RecordingInstaller(root / "system", clock=clock),
        reports=Reports(),
        clock=clock,
    )


@pytest.fixture
def fw_image() -> bytes:
    return image_bytes(25 * 65536 + 777)  # 26 chunks: progress deciles are visible


@pytest.fixture
def rig(tmp_path: Path, fw_image: bytes) -> Rig:
    return make_rig(tmp_path, fw_image)
