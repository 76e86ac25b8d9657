"""``hatchway device update`` refuses bad input with exit 2 and one line (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hatchway.cli.main import app


def _run(*args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, ["device", "update", *args, "--json"])
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return result.exit_code, json.loads(lines[0])


def test_no_state_file(tmp_path: Path) -> None:
    code, out = _run("--state", str(tmp_path / "none.json"), "--install-cmd", "./install.sh")
    assert code == 2 and "enrol first" in str(out["error"])


def test_an_empty_install_command(tmp_path: Path) -> None:
    code, out = _run("--state", str(tmp_path / "none.json"), "--install-cmd", " ")
    assert code == 2 and "must name a program" in str(out["error"])


def test_broker_without_mqtt(tmp_path: Path) -> None:
    code, out = _run(
        "--state", str(tmp_path / "x.json"), "--install-cmd", "true", "--broker", "mqtt://h"
    )
    assert code == 2 and "--broker goes with --transport mqtt" in str(out["error"])
