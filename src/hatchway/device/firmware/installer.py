"""The pluggable installer (issue 9, "Install ... through the SDK with a pluggable installer").

The updater never touches the device's boot chain itself; it calls an ``Installer``
at each A/B step with an ``InstallTarget`` (the new slot, its verified image file,
the slot that is confirmed good, the manifest):

* ``install``: put the verified image where the inactive slot really lives (flash a
  partition, unpack a rootfs, copy a file). Must be idempotent: a kill -9 during it
  runs it again.
* ``boot``: make the new slot the one that runs (set the boot-once flag, restart a
  service, reboot). If it reboots the machine, ``hatchway device update`` run again
  after the boot resumes at the health check.
* ``health_check(timeout)``: is the new slot healthy? ``False`` rolls back.
* ``confirm``: mark the new slot good for good (clear the boot-once flag).
* ``rollback``: go back to ``active_slot``.

Each failure raises ``InstallError``. ``CommandInstaller`` is the CLI's
implementation (``--install-cmd`` / ``--health-cmd``, docs/firmware.md).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hatchway.errors import HatchwayError
from hatchway.firmware.manifest import Manifest

__all__ = ["CommandInstaller", "InstallError", "InstallTarget", "Installer"]

log = logging.getLogger("hatchway.device.firmware")

DEFAULT_TIMEOUT = 300.0


class InstallError(HatchwayError):
    """An installer step failed; the message is a one-line reason."""


@dataclass(frozen=True, slots=True)
class InstallTarget:
    slot: str  # "a" or "b": the slot being installed, booted, confirmed or left
    image: Path  # that slot's verified image file
    active_slot: str  # the slot confirmed good before this update
    manifest: Manifest


class Installer(Protocol):
    def install(self, target: InstallTarget) -> None: ...

    def boot(self, target: InstallTarget) -> None: ...

    def health_check(self, target: InstallTarget, timeout: float) -> bool: ...

    def confirm(self, target: InstallTarget) -> None: ...

    def rollback(self, target: InstallTarget) -> None: ...


class CommandInstaller:
    """Runs ``install_cmd PHASE`` (no shell) per step, and ``health_cmd`` for the check.

    PHASE is ``install``, ``boot``, ``confirm`` or ``rollback`` (and ``health`` when no
    ``health_cmd`` is given). Exit 0 means done (healthy); anything else, or running past
    ``timeout``, is a failure. The environment carries ``HATCHWAY_FW_PHASE``,
    ``HATCHWAY_FW_IMAGE``, ``HATCHWAY_FW_SLOT``, ``HATCHWAY_FW_ACTIVE_SLOT``,
    ``HATCHWAY_FW_VERSION``, ``HATCHWAY_FW_SEQUENCE``, ``HATCHWAY_FW_CLASS``,
    ``HATCHWAY_FW_SIZE`` and ``HATCHWAY_FW_SHA256`` (hex).
    """

    def __init__(
        self, install_cmd: str, health_cmd: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._install = shlex.split(install_cmd)
        self._health = shlex.split(health_cmd) if health_cmd else None
        if not self._install or (health_cmd is not None and not self._health):
            raise ValueError("--install-cmd / --health-cmd must name a program")
        self.timeout = timeout

    def install(self, target: InstallTarget) -> None:
        self._step("install", target)

    def boot(self, target: InstallTarget) -> None:
        self._step("boot", target)

    def confirm(self, target: InstallTarget) -> None:
        self._step("confirm", target)

    def rollback(self, target: InstallTarget) -> None:
        self._step("rollback", target)

    def health_check(self, target: InstallTarget, timeout: float) -> bool:
        argv = self._health if self._health is not None else [*self._install, "health"]
        try:
            self._run(argv, "health", target, min(timeout, self.timeout))
        except InstallError as exc:
            log.warning("health check failed: %s", exc)
            return False
        return True

    def _step(self, phase: str, target: InstallTarget) -> None:
        self._run([*self._install, phase], phase, target, self.timeout)

    def _run(self, argv: list[str], phase: str, target: InstallTarget, timeout: float) -> None:
        m = target.manifest
        env = {
            **os.environ,
            "HATCHWAY_FW_PHASE": phase,
            "HATCHWAY_FW_IMAGE": str(target.image),
            "HATCHWAY_FW_SLOT": target.slot,
            "HATCHWAY_FW_ACTIVE_SLOT": target.active_slot,
            "HATCHWAY_FW_VERSION": m.version,
            "HATCHWAY_FW_SEQUENCE": str(m.sequence),
            "HATCHWAY_FW_CLASS": m.device_class,
            "HATCHWAY_FW_SIZE": str(m.size),
            "HATCHWAY_FW_SHA256": m.sha256.hex(),
        }
        try:
            done = subprocess.run(  # noqa: S603 - the device's operator chose the program
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(timeout, 0.001),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InstallError(f"{phase}: {argv[0]} ran past {timeout:.0f}s") from None
        except OSError as exc:
            raise InstallError(f"{phase}: cannot run {argv[0]}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] if done.stderr else []
            raise InstallError(
                f"{phase}: {argv[0]} exited {done.returncode}"
                + (f": {tail[0][:200]}" if tail else "")
            )
