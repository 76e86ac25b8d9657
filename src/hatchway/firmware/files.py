"""File adapters for the firmware package: JWK files, the server's trust file, an image slot.

* ``fw-signing.jwk`` (private, 0600) and ``fw-signing.pub.jwk`` (public, 0644),
  written atomically by ``hatchway.pki.files``; an existing key is never
  overwritten, because losing the firmware key strands every device that trusts it.
* ``firmware-trust.json`` in the server's data dir: the firmware trust store as
  JSON, replaced atomically on every change. It is a file rather than a table for
  now (no store migration yet); the later session that publishes firmware moves it
  into the store.
* ``FileImage``: an ``ImageStore`` over a preallocated file, with ``pwrite`` and an
  ``fsync`` per chunk so the download state is never ahead of the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from hatchway.firmware.keys import TrustStore, load_private_jwk, load_public_jwk
from hatchway.msgsec.keys import SigningKey, VerifyingKey
from hatchway.pki.files import write_private, write_public

__all__ = [
    "TRUST_FILE",
    "FileImage",
    "load_trust",
    "public_path_for",
    "read_json",
    "read_private_key",
    "read_public_key",
    "save_trust",
    "write_keypair",
]

TRUST_FILE = "firmware-trust.json"
_MAX_JSON = 1 << 20


def public_path_for(private_path: Path) -> Path:
    """``fw-signing.jwk`` → ``fw-signing.pub.jwk`` (next to it)."""
    name = private_path.name
    stem = name[: -len(".jwk")] if name.endswith(".jwk") else name
    return private_path.with_name(f"{stem}.pub.jwk")


def write_keypair(path: Path, key: SigningKey) -> Path:
    """Write the private JWK to ``path`` and the public one next to it; refuse to overwrite."""
    public = public_path_for(path)
    for target in (path, public):
        if target.exists() or target.is_symlink():
            raise FileExistsError(17, "refusing to overwrite an existing key", str(target))
    write_private(path, _json_bytes(key.to_jwk(private=True)))
    write_public(public, _json_bytes(key.public().to_jwk()))
    return public


def read_json(path: Path) -> dict[str, Any]:
    with Path(path).open("rb") as fh:
        raw = fh.read(_MAX_JSON + 1)
    if len(raw) > _MAX_JSON:
        raise ValueError(f"{path} is larger than {_MAX_JSON} bytes")
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return value


def read_private_key(path: Path) -> SigningKey:
    return load_private_jwk(read_json(path))


def read_public_key(path: Path) -> VerifyingKey:
    jwk = read_json(path)
    if "d" in jwk:
        raise ValueError(f"{path} holds a private key; pass the .pub.jwk file")
    return load_public_jwk(jwk)


def load_trust(data_dir: Path) -> TrustStore:
    path = Path(data_dir) / TRUST_FILE
    if not path.exists():
        return TrustStore()
    return TrustStore.from_json(read_json(path))


def save_trust(data_dir: Path, store: TrustStore) -> Path:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / TRUST_FILE
    write_public(path, _json_bytes(store.to_json()))
    return path


def _json_bytes(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


class FileImage:
    """An ``ImageStore`` over a file of exactly ``size`` bytes (an inactive slot)."""

    def __init__(self, path: Path, size: int) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(path, flags, 0o600)
        self.size = size
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)

    def write_at(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write outside the image")
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(self._fd)  # before the caller persists the state that says "written"

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileImage:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
