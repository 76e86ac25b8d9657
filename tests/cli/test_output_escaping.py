"""Issue 7 part 2 item 9: human CLI output escapes what devices and clients chose.

A device's payload reached the operator's terminal raw: U+009B (CSI, a C1 control)
starts a terminal escape sequence and U+202E makes the rest of the line read
backwards. Human output now shows such characters as ``\\uXXXX``; ``--json`` output
stays exact, so a script still sees what the device sent.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hatchway.cli.output import shown, terminal_safe
from hatchway.config import Settings
from hatchway.runtime import FrozenClock, system_random
from hatchway.server.context import ServerContext
from tests.flows.conftest import enrol

CSI = "\u009b"
RLO = "\u202e"
BIDI = [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]]
C0_C1 = [chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]]
INVISIBLE = ["\u200b", "\u200d", "\ufeff", "\u2028", "\u2029", "\u00ad", "\U000e0041"]


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    settings = Settings(data_dir=tmp_path / "data", https_port=8443, http_port=8080)
    context = ServerContext.create(settings, clock=clock, random=system_random)
    try:
        yield context
    finally:
        context.close()


def _cli(*args: str) -> str:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _invoke(*args: str) -> Result:
    from hatchway.cli.main import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_device_messages_escapes_c1_and_bidi_but_json_stays_exact(
    ctx: ServerContext, tmp_path: Path, clock: FrozenClock
) -> None:
    hostile = f"ok{CSI}31m red {RLO}txt.exe"
    device = enrol(ctx, "meter-1", tmp_path / "meter-1.json", clock)
    device.send({"note": hostile})
    data_dir = str(ctx.settings.data_dir)

    human = _cli("device", "messages", "meter-1", "--data-dir", data_dir)
    assert CSI not in human and RLO not in human
    assert "\\u009b31m red \\u202etxt.exe" in human

    exact = json.loads(_cli("device", "messages", "meter-1", "--data-dir", data_dir, "--json"))
    assert exact["messages"][0]["body"]["readings"] == {"note": hostile}


def test_error_lines_escape_markup_and_controls(ctx: ServerContext) -> None:
    # The error names the unknown device; "[/]" used to crash rich with a traceback.
    result = _invoke(
        "device",
        "command",
        f"x[/]{RLO}",
        '{"op": "reboot"}',
        "--data-dir",
        str(ctx.settings.data_dir),
    )
    assert result.exit_code == 2
    assert result.stderr == "error: no device 'x[/]\\u202e'; provision it first\n"


@pytest.mark.parametrize("char", C0_C1 + BIDI + INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_bidi_and_format_character_is_escaped(char: str) -> None:
    out = terminal_safe(f"a{char}b")
    assert char not in out
    assert out.startswith("a\\u") and out.endswith("b")
    # The escape is a JSON string escape, so it decodes back to the character.
    assert json.loads(f'"{out}"') == f"a{char}b"


def test_printable_text_is_unchanged() -> None:
    text = "Zoë's TV – 客厅 😀 [x] \\ ok"
    assert terminal_safe(text) == text
    assert shown("[bold]x[/]") == "\\[bold]x\\[/]"


@given(st.text())
def test_escaped_text_has_nothing_a_terminal_would_obey(text: str) -> None:
    out = terminal_safe(text)
    assert out.isprintable()
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in out)
