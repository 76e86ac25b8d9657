"""Atomic, permission-correct writes for key material."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.pki.files import write_private, write_public


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_file_is_0600_despite_open_umask(tmp_path: Path, loose_umask: None) -> None:
    target = tmp_path / "ca.key"
    write_private(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert _mode(target) == 0o600


def test_private_file_never_exists_with_wider_mode(
    tmp_path: Path, loose_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp file is created 0600 by open(2) itself, not chmod-ed later."""
    seen: list[int] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        seen.append(mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    write_private(tmp_path / "k", b"x")
    assert seen[0] == 0o600


def test_public_file_is_0644_despite_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_public(tmp_path / "ca.crt", b"cert")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "ca.crt") == 0o644


def test_replaces_existing_content_and_tightens_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_private(target, b"new" * 100_000)
    assert target.read_bytes() == b"new" * 100_000
    assert _mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failure_leaves_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "device.json"
    write_private(target, b"old state")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_private(target, b"new state")
    assert target.read_bytes() == b"old state"
    assert [p.name for p in tmp_path.iterdir()] == ["device.json"]


def test_failed_rename_leaves_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ca.crt"
    write_public(target, b"v1")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_public(target, b"v2")
    assert target.read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["ca.crt"]


def test_symlink_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "key"
    link.symlink_to(victim)
    write_private(link, b"key material")
    assert victim.read_bytes() == b"keep"
    assert not link.is_symlink()
    assert link.read_bytes() == b"key material"
