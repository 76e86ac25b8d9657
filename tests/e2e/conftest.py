from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.server.process import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
