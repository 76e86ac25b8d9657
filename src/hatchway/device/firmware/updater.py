"""The device's update state machine (issue 9, "Install" and the device half of "Delivery").

offer -> ``check_manifest`` (the device's own firmware trust and position) -> unwrap
the content key -> download the missing chunks into the inactive slot (decrypt,
check, write; a chunk that fails is fetched again and never written) -> ``finish``
(whole image re-read and checked) -> install -> boot -> health check -> confirm, or
roll back. Each step is recorded in the slot directory (``slots.py``) before the
next begins, so a process killed at any point resumes where it was: the download
without fetching chunks it has, an installed image at its health check, and an
image not confirmed within ``confirm_within`` of its boot is rolled back
(``confirm_timeout``).

The new sequence, version and any key rotation (``trust_after``) reach the device's
identity only at the commit point, after the health check: a rolled-back update
leaves the device's trust and anti-rollback position as they were.

I/O comes in through narrow callables: ``fetch(chunks, index)`` for a sealed
chunk, ``report(body)`` for a FIRMWARE_REPORT body, the ``Installer``, ``identity``
/ ``commit`` for the state file, and ``clock``. Reports other than download
progress go through the record's outbox first, so a refusal or rollback is
reported even if the process dies, or the server is away, when it happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hatchway.device.firmware.identity import FirmwareIdentity
from hatchway.device.firmware.installer import Installer, InstallError, InstallTarget
from hatchway.device.firmware.offer import FirmwareOffer
from hatchway.device.firmware.slots import Pending, Phase, SlotDir, SlotRecord, other_slot
from hatchway.errors import HatchwayError
from hatchway.firmware import (
    ChunkAssembler,
    ChunkCipher,
    ChunkRefused,
    InvalidManifest,
    Manifest,
    ManifestRefused,
    RefusalReason,
    check_manifest,
    trust_after,
    unwrap_content_key,
    verify_manifest,
)
from hatchway.firmware.files import FileImage
from hatchway.firmware.wire import DeviceFirmwareState, RollbackReason
from hatchway.msgsec.keys import DecryptionKey
from hatchway.runtime import Clock

__all__ = ["DownloadInterrupted", "FetchError", "UpdateResult", "Updater"]

log = logging.getLogger("hatchway.device.firmware")

Fetch = Callable[[str, int], bytes]
Report = Callable[[dict[str, Any]], bool]
State = DeviceFirmwareState


class FetchError(HatchwayError):
    """A chunk could not be fetched (network, HTTP status); it is tried again."""


class DownloadInterrupted(HatchwayError):
    """The download stopped short; the record stays and the next run resumes it."""


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one run ended with; ``state`` ``None`` means there was nothing to do."""

    release: str | None
    state: DeviceFirmwareState | None
    reason: str | None = None
    version: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in (None, State.CONFIRMED)


class Updater:
    def __init__(
        self,
        slots: SlotDir,
        *,
        identity: Callable[[], FirmwareIdentity],
        commit: Callable[[FirmwareIdentity], None],
        decryption_key: DecryptionKey,
        installer: Installer,
        fetch: Fetch,
        report: Report,
        clock: Clock,
        max_image_size: int | None = None,
        max_attempts: int = 5,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.slots = slots
        self._identity = identity
        self._commit = commit
        self._key = decryption_key
        self._installer = installer
        self._fetch = fetch
        self._report = report
        self._clock = clock
        self.max_image_size = max_image_size
        self.max_attempts = max_attempts
        self.on_progress = on_progress
        self.refetched = 0  # chunks fetched again after failing their tag or hash
        self.record = slots.load()

    # -- entry points ------------------------------------------------------------------------
    @property
    def pending(self) -> Pending | None:
        return self.record.pending

    def resume(self) -> UpdateResult | None:
        """Deliver unsent reports and finish an update in progress; ``None`` if there is none."""
        self.flush()
        pending = self.record.pending
        return None if pending is None else self._run(pending)

    def handle(self, offer: FirmwareOffer) -> UpdateResult:
        """Act on an offer: refuse it, or take it to confirmed or rolled back."""
        self.flush()
        pending = self.record.pending
        if pending is not None and pending.phase not in (Phase.DOWNLOADING, Phase.VERIFIED):
            # An installed image is finished first; the server offers the next one again.
            return self._run(pending)
        now = self._clock()
        identity = self._identity()
        try:
            manifest = check_manifest(
                offer.manifest,
                trust=identity.trust,
                position=identity.position(self.max_image_size),
                now=now,
            )
            failed = self.record.failure_of(manifest.sequence, manifest.sha256.hex())
            if failed is None:
                # Checked before anything is written: a key for another image is refused here.
                unwrap_content_key(offer.key, self._key, manifest.sha256)
        except ManifestRefused as exc:
            self._log_refusal(offer.release, exc)
            keep = pending is not None and pending.offer.release != offer.release
            return self._refuse(offer.release, exc.reason, clear=not keep)
        if failed is not None:
            # This image was rolled back here before: report it again, do not reinstall.
            self._outbox(self.record, offer.release, State.ROLLED_BACK, failed)
            return UpdateResult(offer.release, State.ROLLED_BACK, failed, manifest.version)
        same = pending is not None and pending.offer.manifest == offer.manifest
        if pending is not None and same:
            # The same image offered again (new wrapped key or chunk path): resume it.
            self._save(self.record.move(replace(pending, offer=offer)))
        else:
            if pending is not None:
                self.slots.clear_download()  # another image's chunks are no use
            slot = other_slot(self.record.active)
            record = self.record.move(Pending(offer, slot, Phase.DOWNLOADING))
            self._outbox(record, offer.release, State.DOWNLOADING, progress=0)
        assert self.record.pending is not None  # noqa: S101 - just saved
        return self._run(self.record.pending)

    def flush(self) -> None:
        """Send the outbox, oldest first; stop at the first report that cannot go now."""
        while self.record.outbox:
            if not self._send(self.record.outbox[0]):
                return
            self._save(replace(self.record, outbox=self.record.outbox[1:]))

    # -- the phases ---------------------------------------------------------------------------
    def _run(self, pending: Pending) -> UpdateResult:
        while True:
            self.flush()
            manifest = self._manifest(pending)
            if isinstance(manifest, UpdateResult):
                return manifest
            step = {
                Phase.DOWNLOADING: self._download,
                Phase.VERIFIED: self._install,
                Phase.INSTALLING: self._install_and_boot,
                Phase.BOOTED: self._check_health,
                Phase.CONFIRMED: self._confirmed,
            }[pending.phase]
            outcome = step(pending, manifest)
            if isinstance(outcome, UpdateResult):
                self.flush()
                return outcome
            pending = outcome

    def _manifest(self, pending: Pending) -> Manifest | UpdateResult:
        """The pending manifest, checked again: fully before install, authenticity after."""
        identity = self._identity()
        try:
            if pending.phase in (Phase.DOWNLOADING, Phase.VERIFIED):
                return check_manifest(
                    pending.offer.manifest,
                    trust=identity.trust,
                    position=identity.position(self.max_image_size),
                    now=self._clock(),
                )
            # Installed: the policy was met at install time; the identity may already
            # hold this manifest's sequence (a kill -9 after the commit point).
            at = pending.booted_at if pending.booted_at is not None else self._clock()
            return verify_manifest(pending.offer.manifest, identity.trust, at)
        except ManifestRefused as exc:
            self._log_refusal(pending.offer.release, exc)
            if pending.phase in (Phase.DOWNLOADING, Phase.VERIFIED):
                return self._refuse(pending.offer.release, exc.reason, clear=True)
            if pending.phase is Phase.CONFIRMED:
                raise  # the commit point was passed: never undo it
            return self._rollback_unparsed(pending, RollbackReason.INSTALL_FAILED)

    def _download(self, pending: Pending, manifest: Manifest) -> Pending | UpdateResult:
        release = pending.offer.release
        try:
            key = unwrap_content_key(pending.offer.key, self._key, manifest.sha256)
        except InvalidManifest as exc:
            self._log_refusal(release, exc)
            return self._refuse(release, RefusalReason.INVALID, clear=True)
        cipher = ChunkCipher(key, manifest.sha256)
        reported = pending.progress
        with FileImage(self.slots.slot_path(pending.slot), manifest.size) as image:
            assembler = ChunkAssembler(manifest, image, self.slots.load_download())
            for _ in range(self.max_attempts):
                for index in assembler.missing():
                    self._fetch_into(assembler, cipher, pending.offer, index)
                    self.slots.save_download(assembler.state)  # only after the chunk is written
                    total = manifest.chunk_count
                    if self.on_progress is not None:
                        self.on_progress(assembler.received(), total)
                    percent = assembler.received() * 100 // total
                    if percent // 10 > reported // 10 and percent < 100:
                        reported = percent
                        # Best effort, and never ahead of a report still in the outbox.
                        if not self.record.outbox:
                            self._send(_body(release, State.DOWNLOADING, progress=percent))
                try:
                    assembler.finish()
                except ChunkRefused as exc:
                    log.warning("firmware %s: stored chunk %d changed", release, exc.index)
                    self.slots.save_download(assembler.state)
                    continue
                except ManifestRefused as exc:
                    self._log_refusal(release, exc)
                    return self._refuse(release, exc.reason, clear=True)
                break
            else:
                raise DownloadInterrupted(f"firmware {release}: stored chunks keep changing")
        verified = replace(pending, phase=Phase.VERIFIED, progress=100)
        self._outbox(self.record.move(verified), release, State.VERIFIED)
        return verified

    def _fetch_into(
        self, assembler: ChunkAssembler, cipher: ChunkCipher, offer: FirmwareOffer, index: int
    ) -> None:
        why = ""
        for attempt in range(self.max_attempts):
            if attempt:
                self.refetched += 1
            try:
                assembler.receive(index, cipher.open(index, self._fetch(offer.chunks, index)))
                return
            except (FetchError, ChunkRefused) as exc:
                why = str(exc)
                log.info("firmware %s: chunk %d: %s; fetching again", offer.release, index, exc)
        raise DownloadInterrupted(
            f"firmware {offer.release}: chunk {index} failed {self.max_attempts} times ({why}); "
            "run again to resume"
        )

    def _install(self, pending: Pending, manifest: Manifest) -> Pending | UpdateResult:
        # "verified" is never taken from disk: the slot is checked again right before install.
        with FileImage(self.slots.slot_path(pending.slot), manifest.size) as image:
            assembler = ChunkAssembler(manifest, image, self.slots.load_download())
            try:
                assembler.finish()
            except HatchwayError as exc:  # ChunkRefused, DIGEST_MISMATCH, chunks missing
                log.warning("firmware %s: slot changed since download (%s)", pending, exc)
                self.slots.save_download(assembler.state)
                again = replace(pending, phase=Phase.DOWNLOADING)
                self._save(self.record.move(again))
                return again
        installing = replace(pending, phase=Phase.INSTALLING)
        self._save(self.record.move(installing))
        return installing

    def _install_and_boot(self, pending: Pending, manifest: Manifest) -> Pending | UpdateResult:
        # Run again after a kill anywhere in here: the install step must be idempotent.
        try:
            self._installer.install(self._target(pending, manifest))
        except InstallError as exc:
            log.warning("firmware %s: install failed: %s", pending.offer.release, exc)
            return self._rollback(pending, manifest, RollbackReason.INSTALL_FAILED, boot=False)
        # booted_at is saved before the boot step runs: a boot that reboots the machine
        # comes back here in phase "booted", and the confirm deadline already runs.
        booted = replace(pending, phase=Phase.BOOTED, booted_at=int(self._clock()))
        self._outbox(self.record.move(booted), pending.offer.release, State.INSTALLED)
        try:
            self._installer.boot(self._target(booted, manifest))
        except InstallError as exc:
            log.warning("firmware %s: boot failed: %s", pending.offer.release, exc)
            return self._rollback(booted, manifest, RollbackReason.INSTALL_FAILED, boot=True)
        return booted

    def _check_health(self, pending: Pending, manifest: Manifest) -> Pending | UpdateResult:
        deadline = pending.deadline
        assert deadline is not None  # noqa: S101 - set when entering BOOTED
        target = self._target(pending, manifest)
        if self._clock() >= deadline:
            return self._rollback(pending, manifest, RollbackReason.CONFIRM_TIMEOUT, boot=True)
        healthy = self._installer.health_check(target, deadline - self._clock())
        # A check stopped by the deadline (or ending past it) is a timeout, whatever it said.
        if self._clock() >= deadline:
            return self._rollback(pending, manifest, RollbackReason.CONFIRM_TIMEOUT, boot=True)
        if not healthy:
            return self._rollback(pending, manifest, RollbackReason.HEALTH_CHECK_FAILED, boot=True)
        try:
            self._installer.confirm(target)
        except InstallError as exc:
            log.warning("firmware %s: confirm failed: %s", pending.offer.release, exc)
            return self._rollback(pending, manifest, RollbackReason.HEALTH_CHECK_FAILED, boot=True)
        confirmed = replace(pending, phase=Phase.CONFIRMED)
        self._save(self.record.move(confirmed))  # the commit point
        return confirmed

    def _confirmed(self, pending: Pending, manifest: Manifest) -> UpdateResult:
        identity = self._identity()
        if identity.sequence < manifest.sequence:  # not yet applied before a crash
            trust = trust_after(identity.trust, manifest, int(self._clock()))
            self._commit(identity.after(manifest, trust))
        record = replace(self.record, active=pending.slot).move(None)
        self._outbox(record, pending.offer.release, State.CONFIRMED)
        self.slots.clear_download()
        return UpdateResult(pending.offer.release, State.CONFIRMED, version=manifest.version)

    # -- endings --------------------------------------------------------------------------------
    def _rollback(
        self, pending: Pending, manifest: Manifest, reason: RollbackReason, *, boot: bool
    ) -> UpdateResult:
        if boot:
            active = self.record.active
            back = InstallTarget(active, self.slots.slot_path(active), active, manifest)
            try:
                self._installer.rollback(back)
            except InstallError as exc:
                log.error("firmware %s: rollback step failed: %s", pending.offer.release, exc)
        record = self.record.move(None).with_failure(
            manifest.sequence, manifest.sha256.hex(), reason.value
        )
        self._outbox(record, pending.offer.release, State.ROLLED_BACK, reason.value)
        self.slots.clear_download()
        release = pending.offer.release
        return UpdateResult(release, State.ROLLED_BACK, reason.value, manifest.version)

    def _rollback_unparsed(self, pending: Pending, reason: RollbackReason) -> UpdateResult:
        record = self.record.move(None)
        self._outbox(record, pending.offer.release, State.ROLLED_BACK, reason.value)
        self.slots.clear_download()
        return UpdateResult(pending.offer.release, State.ROLLED_BACK, reason.value)

    def _refuse(self, release: str, reason: RefusalReason, *, clear: bool) -> UpdateResult:
        record = self.record.move(None) if clear else self.record
        if clear:
            self.slots.clear_download()
        self._outbox(record, release, State.REFUSED, reason.value)
        self.flush()
        return UpdateResult(release, State.REFUSED, reason.value)

    # -- helpers ------------------------------------------------------------------------------
    def _target(self, pending: Pending, manifest: Manifest) -> InstallTarget:
        path = self.slots.slot_path(pending.slot)
        return InstallTarget(pending.slot, path, self.record.active, manifest)

    def _outbox(
        self,
        record: SlotRecord,
        release: str,
        state: DeviceFirmwareState,
        reason: str | None = None,
        *,
        progress: int | None = None,
    ) -> None:
        self._save(record.with_report(_body(release, state, reason, progress)))

    def _save(self, record: SlotRecord) -> None:
        self.slots.save(record)
        self.record = record

    def _send(self, body: dict[str, Any]) -> bool:
        try:
            return self._report(body)
        except HatchwayError as exc:
            log.info("firmware report not sent now (%s); kept", exc)
            return False

    @staticmethod
    def _log_refusal(release: str, exc: ManifestRefused) -> None:
        detail = exc.log_reason if isinstance(exc, InvalidManifest) else exc.detail
        log.warning("firmware %s refused: %s (%s)", release, exc.reason.value, detail)


def _body(
    release: str,
    state: DeviceFirmwareState,
    reason: str | None = None,
    progress: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"release": release, "state": state.value}
    if reason is not None:
        body["reason"] = reason
    if progress is not None:
        body["progress"] = progress
    return body
