"""Issue 7 part 1: the plain install (no extras) imports, serves and explains itself.

Each check runs in a fresh interpreter in which the optional drivers cannot be
imported (``sys.modules[name] = None`` makes ``import name`` raise), which is
what a machine with only ``pip install -e .`` looks like to hatchway.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Packages that live only in extras (postgres, pcsc, interop) or in none at all.
OPTIONAL = ("psycopg", "psycopg_binary", "smartcard", "redis", "yubikit", "ykman", "playwright")
#: Modules that are the driver adapters themselves and may need their extra.
DRIVER_MODULES = {"hatchway.bus.postgres"}
#: Scripts, not libraries: ``__main__`` runs the CLI, Alembic runs its migrations.
SCRIPTS = {"hatchway.__main__", "hatchway.store.migrations.env"}

BLOCK = "import sys\nfor _name in {names!r}:\n    sys.modules[_name] = None\n"


def _python(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HATCHWAY_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "60"}
    env.pop("HATCHWAY_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(names=OPTIONAL) + code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_every_module_imports_without_the_extras(tmp_path: Path) -> None:
    code = f"""
import importlib, pkgutil, hatchway
skip = {sorted(DRIVER_MODULES | SCRIPTS)!r}
names = [m.name for m in pkgutil.walk_packages(hatchway.__path__, "hatchway.")]
for name in names:
    if name not in skip and ".migrations.versions." not in name:
        importlib.import_module(name)
print(len(names))
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 50


def test_serve_help_and_demo_help_work_without_the_extras(tmp_path: Path) -> None:
    code = "from hatchway.cli.main import main\nsys.argv[0] = 'hatchway'\nmain()\n"
    for command in (["serve", "--help"], ["demo", "--help"], ["version"]):
        done = _python(code, tmp_path, *command)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr


OPERATOR_COMMANDS = [
    ["serve"],
    ["device", "list"],
    ["device", "messages", "meter-1"],
    ["device", "provision", "meter-1"],
    ["device", "command", "meter-1", '{"op": "reboot"}'],
    ["users", "list"],
    ["users", "disable", "alice"],
    ["sessions", "list"],
    ["sessions", "revoke", "--user", "alice"],
    ["login-flow", "disable"],
]


@pytest.mark.parametrize("command", OPERATOR_COMMANDS, ids=" ".join)
def test_a_postgresql_url_without_psycopg_names_the_extra(
    tmp_path: Path, command: list[str]
) -> None:
    # A bare postgresql:// would make SQLAlchemy look for psycopg2; it means psycopg too.
    url = "postgresql://u@127.0.0.1:9/db" if len(command) % 2 else "postgresql+psycopg://u@h/db"
    code = "from hatchway.cli.main import main\nsys.argv[0] = 'hatchway'\nmain()\n"
    done = _python(code, tmp_path, *command, "--database-url", url)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line, even at 60 columns
    assert done.stderr.startswith("error: a PostgreSQL database URL needs psycopg")
    assert "pip install 'hatchway[postgres]'" in done.stderr


def test_the_json_error_names_the_extra_too(tmp_path: Path) -> None:
    code = "from hatchway.cli.main import main\nsys.argv[0] = 'hatchway'\nmain()\n"
    url = "postgresql+psycopg://u@h/db"
    done = _python(code, tmp_path, "device", "list", "--json", "--database-url", url)
    assert done.returncode == 2
    assert done.stdout.strip() == (
        '{"error": "a PostgreSQL database URL needs psycopg, which is not installed: '
        "pip install 'hatchway[postgres]'\"}"
    )


def test_the_sdk_and_bus_report_the_extra_as_a_configuration_error(tmp_path: Path) -> None:
    code = """
from hatchway.bus import bus_from_url
from hatchway.errors import ConfigurationError
from hatchway.store import Store
print(type(bus_from_url(None)).__name__)
for call in (lambda: bus_from_url("postgresql://h/db"), lambda: Store.open("postgresql://h/db")):
    try:
        call()
    except ConfigurationError as exc:
        print(exc)
try:
    from hatchway.bus import PostgresBus
except ConfigurationError as exc:
    print(exc)
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "InProcessBus"
    assert (
        lines[1:]
        == [
            "a PostgreSQL database URL needs psycopg, which is not installed: "
            "pip install 'hatchway[postgres]'"
        ]
        * 3
    )
