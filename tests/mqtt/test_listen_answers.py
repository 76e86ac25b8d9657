"""How ``device listen`` answers: a fixed result, or a program run without a shell."""

from __future__ import annotations

import shlex
import sys

from hatchway.cli.listen import answer_for

COMMAND = {"cid": "c1", "op": "reboot", "args": {"delay": 5}}


def program(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


def test_fixed_result() -> None:
    assert answer_for(COMMAND, fixed={"ok": 1}, program=None) == (True, {"ok": 1})
    assert answer_for(COMMAND, fixed=None, program=None) == (True, None)


def test_program_reads_the_command_and_its_stdout_is_the_result() -> None:
    code = "import json,sys; c=json.load(sys.stdin); print(json.dumps({'did': c['op']}))"
    assert answer_for(COMMAND, fixed=None, program=program(code)) == (True, {"did": "reboot"})


def test_program_failures_become_error_answers() -> None:
    ok, why = answer_for(COMMAND, fixed=None, program=program("import sys; sys.exit(3)"))
    assert not ok and "exited 3" in why
    ok, why = answer_for(COMMAND, fixed=None, program=program("print('not json')"))
    assert not ok and "JSON object" in why
    ok, why = answer_for(COMMAND, fixed=None, program=program("print('[1]')"))
    assert not ok and "JSON object" in why
    ok, why = answer_for(COMMAND, fixed=None, program="/nonexistent/program")
    assert not ok and "--exec failed" in why


def test_no_shell_is_involved() -> None:
    # Shell syntax reaches the program as plain arguments, never as commands.
    code = "import json,sys; print(json.dumps({'argv': sys.argv[1:]}))"
    ok, result = answer_for(COMMAND, fixed=None, program=program(code) + " ';' 'rm -rf /'")
    assert ok and result == {"argv": [";", "rm -rf /"]}
