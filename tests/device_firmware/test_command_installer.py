"""``CommandInstaller``: the CLI's installer runs real programs with the documented contract."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from hatchway.device.firmware import CommandInstaller, InstallError, InstallTarget
from hatchway.firmware.wire import DeviceFirmwareState as S
from tests.device_firmware.conftest import Rig
from tests.firmware.conftest import make_manifest


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


LOGGER = """
import json, os, sys
with open(os.environ["LOG"], "a") as fh:
    fh.write(json.dumps({"argv": sys.argv[1:], **{k: v for k, v in os.environ.items()
                         if k.startswith("HATCHWAY_FW_")}}) + "\\n")
sys.exit(int(os.environ.get("FAIL_" + (sys.argv[1] if len(sys.argv) > 1 else "HEALTH"), "0")))
"""


def _target(tmp_path: Path) -> InstallTarget:
    image = tmp_path / "slot-b.img"
    image.write_bytes(b"x" * 10)
    return InstallTarget("b", image, "a", make_manifest(b"x" * 10))


def test_each_phase_runs_the_program_with_the_documented_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("LOG", str(log))
    installer = CommandInstaller(str(script(tmp_path / "install.py", LOGGER)))
    target = _target(tmp_path)
    installer.install(target)
    installer.boot(target)
    assert installer.health_check(target, timeout=5) is True
    installer.confirm(target)
    installer.rollback(target)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["argv"] for line in lines] == [
        ["install"],
        ["boot"],
        ["health"],
        ["confirm"],
        ["rollback"],
    ]
    first = lines[0]
    assert first["HATCHWAY_FW_PHASE"] == "install"
    assert first["HATCHWAY_FW_IMAGE"] == str(target.image)
    assert (first["HATCHWAY_FW_SLOT"], first["HATCHWAY_FW_ACTIVE_SLOT"]) == ("b", "a")
    assert (first["HATCHWAY_FW_VERSION"], first["HATCHWAY_FW_SEQUENCE"]) == ("2.1.0", "21")
    assert first["HATCHWAY_FW_CLASS"] == "acme-meter-v2"
    assert first["HATCHWAY_FW_SIZE"] == "10"
    assert first["HATCHWAY_FW_SHA256"] == target.manifest.sha256.hex()


def test_a_failing_step_is_an_install_error_with_its_last_stderr_line(tmp_path: Path) -> None:
    failing = script(
        tmp_path / "f.py", "import sys\nprint('flash\\nbad sector', file=sys.stderr)\nsys.exit(3)"
    )
    with pytest.raises(InstallError, match=r"install: .* exited 3: bad sector"):
        CommandInstaller(str(failing)).install(_target(tmp_path))


def test_the_health_command_decides_and_a_slow_one_fails(tmp_path: Path) -> None:
    ok = script(tmp_path / "ok.py", "")
    bad = script(tmp_path / "bad.py", "import sys\nsys.exit(1)")
    slow = script(tmp_path / "slow.py", "import time\ntime.sleep(5)")
    target = _target(tmp_path)
    assert CommandInstaller(str(ok), str(bad)).health_check(target, 5) is False
    assert CommandInstaller(str(bad), str(ok)).health_check(target, 5) is True
    assert CommandInstaller(str(ok), str(slow)).health_check(target, 0.3) is False


def test_a_missing_program_fails_the_step(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="cannot run"):
        CommandInstaller(str(tmp_path / "nope")).boot(_target(tmp_path))
    with pytest.raises(ValueError, match="must name a program"):
        CommandInstaller("")


def test_the_updater_with_a_real_installer_rolls_back_on_a_failing_health_command(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "steps"
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.setenv("FAIL_HEALTH", "1")
    rig.installer = CommandInstaller(  # type: ignore[assignment]
        str(script(tmp_path / "install.py", LOGGER)),
        f"{script(tmp_path / 'health.py', LOGGER)}",
    )
    result = rig.updater().handle(rig.offer())
    assert (result.state, result.reason) == (S.ROLLED_BACK, "health_check_failed")
    phases = [json.loads(line)["HATCHWAY_FW_PHASE"] for line in log.read_text().splitlines()]
    assert phases == ["install", "boot", "health", "rollback"]
    rollback = json.loads(log.read_text().splitlines()[-1])
    assert rollback["HATCHWAY_FW_SLOT"] == "a"  # back to the slot that was good
