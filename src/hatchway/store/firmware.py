"""Firmware keys, published releases and device groups (issue 9; revision 0006_firmware).

The trust store is ``hatchway.firmware.keys.TrustStore`` kept one row per key:
``change_firmware_trust`` loads it, applies the caller's change (``add``,
``retire``, ``revoke``: the rules stay in ``TrustStore``) and writes the keys that
changed, in one transaction. Releases are immutable once published; a release row
and its sealed chunks (``firmware_chunks``) are written in one transaction, so a
replica that sees the release can read every chunk of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from hatchway.firmware.chunkfile import check_sealed
from hatchway.firmware.keys import TrustedKey, TrustStore
from hatchway.store._base import RepositoryBase, check_id
from hatchway.store.errors import UnknownDevice
from hatchway.store.firmware_records import ReleaseExists, ReleaseRecord
from hatchway.store.records import DeviceStatus
from hatchway.store.schema import (
    MAX_RELEASE_ID_LENGTH,
    device_groups,
    devices,
    firmware_chunks,
    firmware_keys,
    firmware_releases,
)

__all__ = ["FirmwareRepository", "check_group", "enrolled_members", "release_from_row"]


def check_group(name: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_RELEASE_ID_LENGTH:
        raise ValueError(f"a group name is 1 to {MAX_RELEASE_ID_LENGTH} characters")
    if not name.isprintable() or name.strip() != name:
        raise ValueError("a group name must be printable, without leading or trailing spaces")


def release_from_row(row: Row[Any]) -> ReleaseRecord:
    return ReleaseRecord(
        release_id=row.release_id,
        device_class=row.device_class,
        version=row.version,
        seq=row.seq,
        kid=row.kid,
        manifest=row.manifest,
        sha256=bytes.fromhex(row.sha256),
        size=row.size,
        chunk_count=row.chunk_count,
        content_key=bytes(row.content_key),
        created_at=row.created_at,
    )


def _load_trust(conn: Connection) -> TrustStore:
    rows = conn.execute(select(firmware_keys.c.entry)).scalars()
    entries = [TrustedKey.from_json(json.loads(text)) for text in rows]
    return TrustStore({e.kid: e for e in entries})


class FirmwareRepository(RepositoryBase):
    """Firmware trust, releases and device groups."""

    # -- trust ----------------------------------------------------------------------------
    def firmware_trust(self) -> TrustStore:
        with self._read() as conn:
            return _load_trust(conn)

    def change_firmware_trust(
        self, change: Callable[[TrustStore], TrustStore], *, now: float
    ) -> TrustStore:
        """Apply ``change`` to the stored trust store atomically; returns the new store.

        Keys are only ever added or updated, never deleted: a revoked kid must stay
        known so that it cannot be trusted again.
        """
        with self._write() as conn:
            before = _load_trust(conn)
            after = change(before)
            for entry in after:
                old = before.get(entry.kid)
                if old == entry:
                    continue
                values = {
                    "status": entry.status.value,
                    "entry": json.dumps(entry.to_json(), sort_keys=True),
                    "updated_at": now,
                }
                if old is None:
                    conn.execute(insert(firmware_keys).values(kid=entry.kid, **values))
                else:
                    conn.execute(
                        update(firmware_keys).where(firmware_keys.c.kid == entry.kid).values(values)
                    )
            missing = [e.kid for e in before if e.kid not in after]
            if missing:
                raise ValueError(f"firmware keys cannot be forgotten: {missing}")
        return after

    def import_firmware_trust(self, trust: TrustStore, *, now: float) -> int:
        """Merge a legacy ``firmware-trust.json``: keys the store does not know are added
        as they were (a revoked key stays revoked); returns how many. Keys the store
        knows keep the store's decision."""
        with self._write() as conn:
            known = set(conn.scalars(select(firmware_keys.c.kid)))
            added = 0
            for entry in trust:
                if entry.kid in known:
                    continue
                conn.execute(
                    insert(firmware_keys).values(
                        kid=entry.kid,
                        status=entry.status.value,
                        entry=json.dumps(entry.to_json(), sort_keys=True),
                        updated_at=now,
                    )
                )
                added += 1
        return added

    # -- releases -------------------------------------------------------------------------
    def add_release(self, release: ReleaseRecord, sealed: Iterable[bytes]) -> None:
        """Record ``release`` and its sealed chunks, in order, in one transaction.

        ``sealed`` is consumed one chunk at a time (an image is never whole in memory);
        a chunk of the wrong length, or a count other than ``release.chunk_count``, is a
        ``ValueError`` and nothing is stored. An exception ``sealed`` raises (publish
        re-checks each chunk's hash as it seals it) rolls everything back too.
        """
        values = {
            "release_id": release.release_id,
            "device_class": release.device_class,
            "version": release.version,
            "seq": release.seq,
            "kid": release.kid,
            "manifest": release.manifest,
            "sha256": release.sha256.hex(),
            "size": release.size,
            "chunk_count": release.chunk_count,
            "content_key": release.content_key,
            "created_at": release.created_at,
        }
        try:
            with self._write() as conn:
                conn.execute(insert(firmware_releases).values(values))
                count = 0
                for index, data in enumerate(sealed):
                    check_sealed(release.size, index, data)
                    row = {"release_id": release.release_id, "idx": index, "sealed": data}
                    conn.execute(insert(firmware_chunks).values(row))
                    count += 1
                if count != release.chunk_count:
                    raise ValueError(f"{count} sealed chunks for {release.chunk_count}")
        except IntegrityError:
            raise ReleaseExists(
                f"{release.device_class} {release.version} is already published"
            ) from None

    def sealed_chunks(self, release_id: str, *, batch: int = 16) -> Iterator[bytes]:
        """The release's sealed chunks in index order, read ``batch`` rows at a time
        (a short read transaction each: chunk rows never change once written)."""
        start = 0
        while True:
            query = (
                select(firmware_chunks.c.idx, firmware_chunks.c.sealed)
                .where(
                    firmware_chunks.c.release_id == release_id,
                    firmware_chunks.c.idx >= start,
                    firmware_chunks.c.idx < start + batch,
                )
                .order_by(firmware_chunks.c.idx)
            )
            with self._read() as conn:
                rows = conn.execute(query).all()
            for index, data in rows:
                if index != start:
                    raise ValueError(f"sealed chunk {start} of {release_id} is missing")
                yield bytes(data)
                start += 1
            if len(rows) < batch:
                return

    def get_release(self, release_id: str) -> ReleaseRecord | None:
        query = select(firmware_releases).where(firmware_releases.c.release_id == release_id)
        with self._read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else release_from_row(row)

    def find_releases(
        self, version: str | None = None, device_class: str | None = None
    ) -> list[ReleaseRecord]:
        query = select(firmware_releases).order_by(firmware_releases.c.created_at)
        if version is not None:
            query = query.where(firmware_releases.c.version == version)
        if device_class is not None:
            query = query.where(firmware_releases.c.device_class == device_class)
        with self._read() as conn:
            return [release_from_row(row) for row in conn.execute(query)]

    # -- groups ---------------------------------------------------------------------------
    def add_to_group(self, group: str, device_ids: Iterable[str], *, now: float) -> int:
        """Add devices to ``group`` (created on first use); returns how many were new."""
        check_group(group)
        wanted = sorted(set(device_ids))
        with self._write() as conn:
            known = set(
                conn.scalars(select(devices.c.device_id).where(devices.c.device_id.in_(wanted)))
            )
            unknown = [d for d in wanted if d not in known]
            if unknown:
                raise UnknownDevice(", ".join(unknown))
            present = set(
                conn.scalars(
                    select(device_groups.c.device_id).where(device_groups.c.group_name == group)
                )
            )
            new = [d for d in wanted if d not in present]
            for device_id in new:
                check_id("device_id", device_id)
                conn.execute(
                    insert(device_groups).values(
                        group_name=group, device_id=device_id, added_at=now
                    )
                )
        return len(new)

    def remove_from_group(self, group: str, device_ids: Iterable[str] | None = None) -> int:
        """Remove devices (all of them if ``device_ids`` is None); returns how many."""
        query = delete(device_groups).where(device_groups.c.group_name == group)
        if device_ids is not None:
            query = query.where(device_groups.c.device_id.in_(sorted(set(device_ids))))
        with self._write() as conn:
            return conn.execute(query).rowcount or 0

    def groups(self) -> dict[str, list[str]]:
        """Every group and its members, sorted."""
        query = select(device_groups.c.group_name, device_groups.c.device_id).order_by(
            device_groups.c.group_name, device_groups.c.device_id
        )
        out: dict[str, list[str]] = {}
        with self._read() as conn:
            for group, device_id in conn.execute(query):
                out.setdefault(group, []).append(device_id)
        return out


def enrolled_members(conn: Connection, group: str) -> list[str]:
    """The group's enrolled devices, sorted (the order devices fill the waves)."""
    query = (
        select(device_groups.c.device_id)
        .join(devices, devices.c.device_id == device_groups.c.device_id)
        .where(
            device_groups.c.group_name == group,
            devices.c.status == DeviceStatus.ENROLLED.value,
        )
        .order_by(device_groups.c.device_id)
    )
    return list(conn.scalars(query))
