"""Firmware update foundation (issue 9): keys, signed manifests, chunked verified download.

Public surface; every module below is sans-I/O except ``files`` (JWK files, the
trust file, an image slot on disk). See docs/firmware.md for the threat model.
"""

from __future__ import annotations

from hatchway.firmware.chunks import ChunkAssembler, DownloadState, ImageStore, MemoryImage
from hatchway.firmware.crypt import (
    ChunkCipher,
    new_content_key,
    unwrap_content_key,
    wrap_content_key,
)
from hatchway.firmware.device import DevicePosition, check_manifest, check_policy, trust_after
from hatchway.firmware.errors import ChunkRefused, InvalidManifest, ManifestRefused, RefusalReason
from hatchway.firmware.keys import (
    FIRMWARE_ALG,
    KeyStatus,
    TrustedKey,
    TrustStore,
    generate_firmware_key,
    load_private_jwk,
    load_public_jwk,
)
from hatchway.firmware.manifest import (
    CHUNK_SIZE,
    MANIFEST_TYP,
    MAX_MANIFEST_BYTES,
    Manifest,
    Rotation,
    digest_image,
    parse_version,
    rotation_proof,
    sign_manifest,
    split_chunks,
    verify_manifest,
)

__all__ = [
    "CHUNK_SIZE",
    "FIRMWARE_ALG",
    "MANIFEST_TYP",
    "MAX_MANIFEST_BYTES",
    "ChunkAssembler",
    "ChunkCipher",
    "ChunkRefused",
    "DevicePosition",
    "DownloadState",
    "ImageStore",
    "InvalidManifest",
    "KeyStatus",
    "Manifest",
    "ManifestRefused",
    "MemoryImage",
    "RefusalReason",
    "Rotation",
    "TrustStore",
    "TrustedKey",
    "check_manifest",
    "check_policy",
    "digest_image",
    "generate_firmware_key",
    "load_private_jwk",
    "load_public_jwk",
    "new_content_key",
    "parse_version",
    "rotation_proof",
    "sign_manifest",
    "split_chunks",
    "trust_after",
    "unwrap_content_key",
    "verify_manifest",
    "wrap_content_key",
]
