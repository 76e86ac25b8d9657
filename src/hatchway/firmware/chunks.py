"""Chunk-by-chunk download, checked as it arrives and resumable (issue 9, delivery step 3).

Sans-I/O core: ``ChunkAssembler`` holds a small serialisable ``DownloadState``
(which chunks are in place, for which manifest) and writes through one narrow
injected ``ImageStore`` (``write_at``/``read_at``): ``MemoryImage`` here,
``hatchway.firmware.files.FileImage`` for the inactive slot on disk.

Rules, each a test in tests/firmware/test_chunks.py:

* a chunk is hashed against the manifest's list *before* it is written; one that
  fails (or has the wrong length, or an index outside the list) raises
  ``ChunkRefused`` (fetch it again) and is never written;
* the caller persists ``state`` only after ``receive`` returned, so a crash can lose
  a chunk (fetched again) but never mark one present that was not written;
* ``finish`` reads the whole image back, checks every chunk hash again (storage
  could have changed under us, or a state file could lie) and then the image's
  SHA-256; a stored chunk that fails goes back to missing, and an image whose
  chunks all match but whose digest does not is refused (``DIGEST_MISMATCH``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hatchway.errors import LocalProtocolError
from hatchway.firmware.errors import ChunkRefused, ManifestRefused, RefusalReason
from hatchway.firmware.manifest import Manifest
from hatchway.msgsec._codec import CodecError, b64d, b64e

__all__ = ["ChunkAssembler", "DownloadState", "ImageStore", "MemoryImage"]

STATE_FORMAT = "hatchway-fw-download/1"


class ImageStore(Protocol):
    """Where the assembled image goes: the inactive slot, a file, or memory."""

    def write_at(self, offset: int, data: bytes) -> None: ...

    def read_at(self, offset: int, size: int) -> bytes: ...


class MemoryImage:
    """An ``ImageStore`` in memory, for tests and small images."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def write_at(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > len(self.data):
            raise LocalProtocolError("write outside the image")
        self.data[offset : offset + len(data)] = data

    def read_at(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])


@dataclass(frozen=True, slots=True)
class DownloadState:
    """What survives a restart: the manifest it belongs to and a bitmap of chunks in place."""

    sequence: int
    sha256: bytes
    have: bytes  # bit i (LSB first within each byte) set: chunk i is written
    verified: bool = False

    @classmethod
    def fresh(cls, manifest: Manifest) -> DownloadState:
        return cls(manifest.sequence, manifest.sha256, bytes(-(-manifest.chunk_count // 8)))

    def has(self, index: int) -> bool:
        return bool(self.have[index >> 3] >> (index & 7) & 1)

    def matches(self, manifest: Manifest) -> bool:
        return (
            self.sequence == manifest.sequence
            and hmac.compare_digest(self.sha256, manifest.sha256)
            and len(self.have) == -(-manifest.chunk_count // 8)
            # No bit set past the last chunk: a state for a longer image is not ours.
            and all(not self.has(i) for i in range(manifest.chunk_count, len(self.have) * 8))
        )

    def with_bit(self, index: int, value: bool) -> DownloadState:
        bits = bytearray(self.have)
        if value:
            bits[index >> 3] |= 1 << (index & 7)
        else:
            bits[index >> 3] &= ~(1 << (index & 7)) & 0xFF
        return DownloadState(self.sequence, self.sha256, bytes(bits), verified=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "seq": self.sequence,
            "sha256": b64e(self.sha256).decode(),
            "have": b64e(self.have).decode(),
            "verified": self.verified,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DownloadState:
        if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} state")
        seq, verified = data.get("seq"), data.get("verified")
        sha, have = data.get("sha256"), data.get("have")
        if type(seq) is not int or type(verified) is not bool:
            raise ValueError("download state: seq/verified of the wrong type")
        if not isinstance(sha, str) or not isinstance(have, str):
            raise ValueError("download state: sha256/have must be strings")
        try:
            return cls(seq, b64d(sha.encode("ascii")), b64d(have.encode("ascii")), verified)
        except (CodecError, UnicodeEncodeError):
            raise ValueError("download state: bad base64url") from None


class ChunkAssembler:
    """Places verified chunks of one manifest's image into an ``ImageStore``."""

    def __init__(
        self, manifest: Manifest, image: ImageStore, state: DownloadState | None = None
    ) -> None:
        self.manifest = manifest
        self._image = image
        # A state for another manifest (a newer release, a different image) is
        # discarded: resuming into it would mix two images.
        ours = state is not None and state.matches(manifest)
        self._state: DownloadState = state if ours and state else DownloadState.fresh(manifest)
        if self._state.verified:
            # "verified" is never taken from a file: the slot may have changed while
            # we were down, so a restarted device runs ``finish`` again before install.
            s = self._state
            self._state = DownloadState(s.sequence, s.sha256, s.have, verified=False)

    @property
    def state(self) -> DownloadState:
        return self._state

    @property
    def verified(self) -> bool:
        return self.state.verified

    def missing(self) -> list[int]:
        return [i for i in range(self.manifest.chunk_count) if not self.state.has(i)]

    def received(self) -> int:
        return self.manifest.chunk_count - len(self.missing())

    def offset(self, index: int) -> int:
        return index * self.manifest.chunk_size

    def receive(self, index: int, data: bytes) -> bool:
        """Check chunk ``index`` and write it; ``False`` if it was already in place.

        Raises ``ChunkRefused`` for an index outside the manifest, a wrong length or
        a hash mismatch; nothing is written then.
        """
        m = self.manifest
        # Hash and write one immutable copy: a caller's bytearray or memoryview
        # changed between the check and the write would be a TOCTOU hole.
        data = bytes(data)
        if type(index) is not int or not 0 <= index < m.chunk_count:
            raise ChunkRefused(index if type(index) is int else -1, "index outside the manifest")
        if len(data) != m.chunk_length(index):
            raise ChunkRefused(index, "wrong length")
        if not hmac.compare_digest(hashlib.sha256(data).digest(), m.chunks[index]):
            raise ChunkRefused(index, "hash mismatch")
        if self.state.has(index):
            return False
        self._image.write_at(self.offset(index), data)
        self._state = self.state.with_bit(index, True)
        return True

    def finish(self) -> None:
        """Re-read and check the whole image; on success ``state.verified`` is set.

        Raises ``LocalProtocolError`` if chunks are still missing, ``ChunkRefused``
        (those chunks are missing again) if stored data no longer matches, and
        ``ManifestRefused(DIGEST_MISMATCH)`` if the image's SHA-256 differs.
        """
        m = self.manifest
        if self.missing():
            raise LocalProtocolError(f"{len(self.missing())} chunks still missing")
        whole = hashlib.sha256()
        bad: list[int] = []
        for index in range(m.chunk_count):
            data = self._image.read_at(self.offset(index), m.chunk_length(index))
            if not hmac.compare_digest(hashlib.sha256(data).digest(), m.chunks[index]):
                bad.append(index)
            whole.update(data)
        if bad:
            state = self.state
            for index in bad:
                state = state.with_bit(index, False)
            self._state = state
            raise ChunkRefused(bad[0], f"{len(bad)} stored chunks no longer match")
        if not hmac.compare_digest(whole.digest(), m.sha256):
            # Every chunk matched its signed hash, so the signer's list and digest
            # disagree: no refetch can fix that.
            raise ManifestRefused(RefusalReason.DIGEST_MISMATCH, "image SHA-256 differs")
        s = self.state
        self._state = DownloadState(s.sequence, s.sha256, s.have, verified=True)
