"""The operator CLI prints device-chosen text literally (rich markup is escaped).

A device names itself at ``hatchway login --device-name``; whoever runs that
chooses the string that ``hatchway sessions list`` later prints to an operator.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from hatchway.login import make_verifier
from hatchway.runtime import SeededRandom
from hatchway.store import Store

HOSTILE = ["[/] TV", "[link=https://evil.example]Living-room TV[/link]", "[bold red]OK[/"]


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HATCHWAY_DATA_DIR=str(data_dir), COLUMNS="400")
    return subprocess.run(
        [sys.executable, "-m", "hatchway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_markup_in_device_and_user_names_is_printed_not_obeyed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    now = time.time()
    with Store.open(f"sqlite:///{data / 'hatchway.sqlite3'}") as store:
        verifier = make_verifier("pencil", random=SeededRandom(), iterations=4096)
        store.add_user("[b]mallory[/b]", verifier, now=now)
        for n, name in enumerate(HOSTILE):
            store.create_refresh_token(
                hashlib.sha256(name.encode()).digest(),
                username="[b]mallory[/b]",
                client_id="tv",
                device_name=name,
                session_family=f"fam{n}" + "A" * 19,
                now=now,
                expires_at=now + 999,
            )
    listed = _run(data, "sessions", "list")
    assert listed.returncode == 0, listed.stderr
    for name in HOSTILE:
        assert name in listed.stdout
    assert "\x1b]8;" not in listed.stdout  # no OSC 8 hyperlink was emitted
    users = _run(data, "users", "list")
    assert users.returncode == 0 and "[b]mallory[/b]" in users.stdout
