"""Issue 7 part 1, "docs that match the code": help texts and the demo's narration.

``hatchway demo --help`` said it ran only the message flow (it runs all three),
``hatchway login --help`` said ``--json`` printed one JSON object (it prints one
per line), and piped narration wrapped mid-sentence at 80 columns.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _hatchway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    return subprocess.run(
        [sys.executable, "-m", "hatchway", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _words(text: str) -> str:
    """Help text with rich's box drawing and wrapping taken out."""
    return " ".join(text.replace("│", " ").split())


def test_demo_help_says_it_runs_all_three_flows() -> None:
    done = _hatchway("demo", "--help")
    assert done.returncode == 0
    text = _words(done.stdout)
    assert "Run all three flows end to end" in text
    assert "cross-device login and the secure-element channel" in text


def test_login_help_says_json_is_one_object_per_line() -> None:
    done = _hatchway("login", "--help")
    assert done.returncode == 0
    text = _words(done.stdout)
    assert "prints one JSON object per line" in text
    assert "Print one JSON object per line" in text  # the --json option itself


@pytest.mark.e2e
def test_demo_passes_and_piped_narration_keeps_each_sentence_on_one_line() -> None:
    done = _hatchway("demo", "--messages", "2", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "demo finished: every step checked"
    assert "" not in lines  # no spinner or progress-bar leftovers
    # Longer than 80 columns: rich used to break them there when not on a terminal.
    assert (
        "  2. device enrolled over TLS: first token, keys + proof of possession, certificate"
        in lines
    )
    assert any(
        re.fullmatch(r"  3\. genuine page: channel opened .* the page saw only ciphertext", line)
        for line in lines
    )
    headings = [line for line in lines if not line.startswith(" ")]
    assert headings == [
        "Message-level security after TLS (US 11,546,310 B2)",
        "Cross-device login (US 9,635,022 B2)",
        "Secure-element channel through a web app (US 10,812,467 B2)",
        "demo finished: every step checked",
    ]


def test_the_test_extra_installs_from_wheels_and_interop_holds_yubikit() -> None:
    """Packages without a Linux wheel stay out of ``test`` (the README's install).

    .ci/run checks the whole resolution with ``pip --only-binary :all:``; this
    catches the known offenders without a network.
    """
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower() for req in extras["test"]}
    assert names.isdisjoint({"pyscard", "yubikey-manager"})
    assert "pytest-randomly" in names
    assert any(req.startswith("yubikey-manager") for req in extras["interop"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "--only-binary :all: -e '.[test]'" in ci
    assert "-e '.[test,pcsc,interop]'" in ci


def test_a_missing_test_module_skips_locally_and_fails_in_ci(tmp_path: Path) -> None:
    (tmp_path / "test_needs_it.py").write_text(
        "from tests.services import require_module\n"
        "require_module('hatchway_no_such_module', extra='interop')\n"
        "def test_never(): ...\n"
    )
    (tmp_path / "test_other.py").write_text("def test_runs(): ...\n")

    def run(ci: str) -> subprocess.CompletedProcess[str]:
        path = os.pathsep.join([str(ROOT), str(ROOT / "src")])
        env = {**os.environ, "CI": ci, "PYTHONPATH": path}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                str(tmp_path),
                "-c",
                os.devnull,
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    local = run("")
    assert local.returncode == 0, local.stdout
    assert "hatchway_no_such_module (pip install -e '.[interop]') not installed" in local.stdout
    in_ci = run("true")
    assert in_ci.returncode != 0
    assert "required when CI=true" in in_ci.stdout
