"""How ``hatchway device listen`` answers a command: a fixed result, or a program.

The program gets the command (``{"cid", "op", "args"}``) as JSON on stdin and no shell;
its stdout must be one JSON object, the result. A non-zero exit, a timeout or other
output is answered as an error, so the operator sees why.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

EXEC_TIMEOUT = 60.0


def answer_for(
    command: dict[str, Any], *, fixed: dict[str, Any] | None, program: str | None
) -> tuple[bool, Any]:
    """(ok, result) for ``command``; when not ok, the result is an error text."""
    if program is None:
        return True, fixed
    try:
        done = subprocess.run(  # noqa: S603 - the device's own operator chose the program
            shlex.split(program),
            input=json.dumps(command),
            capture_output=True,
            text=True,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"--exec failed: {exc}"
    if done.returncode != 0:
        return False, f"--exec exited {done.returncode}: {done.stderr.strip()[:200]}"
    try:
        value = json.loads(done.stdout or "{}")
    except ValueError:
        return False, "--exec printed something other than a JSON object"
    if not isinstance(value, dict):
        return False, "--exec printed something other than a JSON object"
    return True, value
