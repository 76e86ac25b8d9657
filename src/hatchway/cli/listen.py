"""``hatchway device listen``: wait for pushed commands and answer each once.

Commands arrive as MQTT pushes. A push that does not open (it expired while queued for
an offline device, or it is not from the server) makes the listener poll, which
re-seals every pending command; so does starting up (``--catch-up``), for commands
pushed before the device had a session. A command can therefore arrive twice (a push
and a poll); it is answered once.

Firmware offers (pushed, or met by a catch-up poll) are carried through by
``hatchway.device.firmware`` when the listener has an installer (``--install-cmd``);
without one they stay for ``hatchway device update``.

Answers are a fixed result, or a program's: the program gets the command (``{"cid",
"op", "args"}``) as JSON on stdin and no shell; its stdout must be one JSON object, the
result. A non-zero exit, a timeout or other output is answered as an error, so the
operator sees why.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hatchway.device import Command, Device, MessageRejected, TransportError
from hatchway.errors import InvalidMessage

log = logging.getLogger("hatchway.device.listen")

EXEC_TIMEOUT = 60.0
#: Least time between two catch-up polls (after a push that does not open).
CATCH_UP_INTERVAL = 5.0


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


class Listener:
    def __init__(
        self,
        device: Device,
        *,
        fixed: dict[str, Any] | None,
        program: str | None,
        count: int,
        report: Callable[[Command, bool, Any], None],
        on_offer: Callable[[], None] | None = None,
    ) -> None:
        self.device = device
        #: Runs a firmware update when an offer arrived (pushed, or met by a poll).
        self.on_offer = on_offer
        self.fixed = fixed
        self.program = program
        self.count = count
        self.report = report
        self.answered: set[str] = set()
        self._last_catch_up = -CATCH_UP_INTERVAL

    @property
    def done(self) -> bool:
        return bool(self.count) and len(self.answered) >= self.count

    def run(self, *, stopping: Callable[[], bool], catch_up: bool) -> None:
        if catch_up:
            self._answer_all(self._pending())
        while not stopping() and not self.done:
            try:
                commands: Iterable[Command | None] = [self.device.receive(timeout=0.5)]
            except TransportError:
                continue  # the broker is away; the transport keeps reconnecting
            except InvalidMessage:
                # Fetch what is pending afresh, but not more often than every few
                # seconds, whatever a broker sends.
                if time.monotonic() - self._last_catch_up < CATCH_UP_INTERVAL:
                    continue
                commands = self._pending()
            self._answer_all(commands)
            if self.device.offers and self.on_offer is not None:
                self.on_offer()

    def _answer_all(self, commands: Iterable[Command | None]) -> None:
        for command in commands:
            if command is None or command.cid in self.answered or self.done:
                continue
            ok, answer = answer_for(command.body, fixed=self.fixed, program=self.program)
            try:
                if ok:
                    self.device.respond(command, answer)
                else:
                    self.device.respond(command, error=str(answer))
            except MessageRejected:
                # Answered meanwhile through a newer delivery of the same command.
                log.warning("the answer to %s was refused; skipped", command.cid)
                continue
            self.answered.add(command.cid)
            self.report(command, ok, answer)

    def _pending(self, limit: int = 100) -> Iterator[Command]:
        """Pending commands, one poll at a time: a poll returns the oldest unanswered
        one, so each is answered (by the caller) before the next poll moves on."""
        self._last_catch_up = time.monotonic()
        seen: set[str] = set()
        while len(seen) < limit:
            command = self.device.poll()
            if command is None or command.cid in seen:
                return
            seen.add(command.cid)
            yield command
