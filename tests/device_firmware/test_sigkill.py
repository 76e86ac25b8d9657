"""A real device process killed with SIGKILL mid-download resumes without refetching."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hatchway.device.firmware import SlotDir
from tests.firmware.conftest import image_bytes

CHUNKS = 41


def _start(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.device_firmware._runner", str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _fetched(root: Path) -> list[int]:
    path = root / "fetches"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_kill_9_mid_download_then_resume(tmp_path: Path) -> None:
    first = _start(tmp_path)
    deadline = time.monotonic() + 60
    while len(_fetched(tmp_path)) < 15:
        assert time.monotonic() < deadline, "the device never got going"
        assert first.poll() is None, "the device finished before it could be killed"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert first.stdout is not None
    first.stdout.close()
    before = _fetched(tmp_path)
    in_place = SlotDir(tmp_path / "meter-001.json.firmware").load_download()
    assert in_place is not None
    have = {i for i in range(CHUNKS) if in_place.has(i)}
    assert len(have) >= 14

    second = _start(tmp_path)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"state": "confirmed", "reason": None}
    after = _fetched(tmp_path)[len(before) :]
    # Nothing already in place was fetched again; everything else exactly once.
    assert sorted(after) == sorted(set(range(CHUNKS)) - have)
    image = image_bytes(40 * 65536 + 5)
    assert (tmp_path / "system" / "installed-b").read_bytes() == image
