"""``hatchway firmware publish MANIFEST IMAGE`` (issue 9, "the server stores the image").

The server checks the manifest against its own firmware trust store and refuses
unless the signing key may publish (``TrustStore.can_publish``: active, not retired
or revoked), checks the image against every signed digest, then encrypts it chunk
by chunk under a fresh content key (``firmware.crypt.ChunkCipher``) and records the
release and its sealed chunks in the store, in one transaction. Nothing is written to
the data dir: every replica serving ``/fw/`` fills its own file cache from the store
(``server/fw_chunks.py``), so publishing needs only the store.

A manifest the server's own message key signed is refused like any other
non-firmware signature (``alg`` is not EdDSA, the kid is not a firmware key).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer

from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption
from hatchway.cli.fw_store import open_firmware_store
from hatchway.cli.output import console, emit, errors_reported, shown
from hatchway.firmware import CHUNK_SIZE, ChunkCipher, ManifestRefused, TrustStore, digest_image
from hatchway.firmware.crypt import new_content_key
from hatchway.firmware.manifest import MAX_MANIFEST_BYTES, Manifest, verify_manifest
from hatchway.runtime import system_clock, system_random
from hatchway.store.firmware_records import ReleaseRecord

__all__ = ["publish", "release_json"]


def _pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while piece := fh.read(CHUNK_SIZE):
            yield piece


def _sealed(path: Path, manifest: Manifest, cipher: ChunkCipher) -> Iterator[bytes]:
    """Each chunk sealed as it is read, its hash checked again: the image file may have
    changed since it was checked, and a raise here rolls the publish back."""
    for index, piece in enumerate(_pieces(path)):
        if index >= manifest.chunk_count or not hmac.compare_digest(
            hashlib.sha256(piece).digest(), manifest.chunks[index]
        ):
            raise ValueError("image refused: it changed while it was being published")
        yield cipher.seal(index, piece, system_random)


def release_json(release: ReleaseRecord) -> dict[str, Any]:
    return {
        "release": release.release_id,
        "class": release.device_class,
        "version": release.version,
        "sequence": release.seq,
        "kid": release.kid,
        "size": release.size,
        "chunks": release.chunk_count,
        "sha256": release.sha256.hex(),
        "published_at": release.created_at,
    }


def _checked(token: bytes, trust: TrustStore, image: Path, now: float) -> Manifest:
    try:
        manifest = verify_manifest(token, trust, now)
    except ManifestRefused as exc:
        raise ValueError(f"manifest refused: {exc.reason.value}") from None
    if not trust.can_publish(manifest.kid):
        entry = trust.get(manifest.kid)
        raise ValueError(
            f"manifest refused: key {manifest.kid} is {entry.status if entry else 'unknown'}; "
            "nothing is published under a retired or revoked key"
        )
    if now >= manifest.expires_at:
        raise ValueError("manifest refused: expired (devices would refuse it)")
    size, sha256, chunks = digest_image(_pieces(image))
    if (size, sha256, chunks) != (manifest.size, manifest.sha256, manifest.chunks):
        raise ValueError("image refused: its size or digests differ from the manifest's")
    return manifest


def publish(
    manifest: Annotated[Path, typer.Argument(help="The signed manifest file.")],
    image: Annotated[Path, typer.Argument(help="The firmware image it signs.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check MANIFEST and IMAGE, encrypt the image per chunk and publish it as a release."""
    with errors_reported(as_json):
        with manifest.open("rb") as fh:
            token = fh.read(MAX_MANIFEST_BYTES + 1).strip()
        with closing(open_firmware_store(data_dir, database_url)) as store:
            now = system_clock()
            checked = _checked(token, store.firmware_trust(), image, now)
            if store.find_releases(checked.version, checked.device_class):
                raise ValueError(f"{checked.device_class} {checked.version} is already published")
            release_id = f"{checked.version}-{secrets.token_hex(4)}"
            content_key = new_content_key(system_random)
            record = ReleaseRecord(
                release_id=release_id,
                device_class=checked.device_class,
                version=checked.version,
                seq=checked.sequence,
                kid=checked.kid,
                manifest=token.decode("ascii"),
                sha256=checked.sha256,
                size=checked.size,
                chunk_count=checked.chunk_count,
                content_key=content_key,
                created_at=now,
            )
            store.add_release(
                record, _sealed(image, checked, ChunkCipher(content_key, checked.sha256))
            )
        emit(
            as_json,
            release_json(record),
            lambda: console.print(
                f"published {shown(release_id)}: {shown(record.device_class)} "
                f"{shown(record.version)} sequence {record.seq}, {record.size} bytes in "
                f"{record.chunk_count} chunks"
            ),
        )
