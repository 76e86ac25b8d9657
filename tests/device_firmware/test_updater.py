"""The device's update state machine (issue 9, "Install"): A/B, confirm or roll back, refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from hatchway.device.firmware import DownloadInterrupted, FirmwareIdentity, Phase
from hatchway.firmware import (
    KeyStatus,
    Manifest,
    Rotation,
    TrustStore,
    rotation_proof,
    sign_manifest,
)
from hatchway.firmware.wire import DeviceFirmwareState as S
from hatchway.msgsec.keys import generate_signing_key
from hatchway.runtime import SeededRandom
from tests.device_firmware.conftest import CLASS, Killed, Rig, make_rig, publish
from tests.firmware.conftest import DAY, NOW, fw_key, make_manifest


def _confirmed(rig: Rig) -> None:
    result = rig.updater().handle(rig.offer())
    assert (result.state, result.reason, result.version) == (S.CONFIRMED, None, "2.1.0")


def test_a_full_update_installs_to_the_inactive_slot_and_confirms(rig: Rig) -> None:
    _confirmed(rig)
    # The image went to slot b (a was active), byte for byte, through every step in order.
    assert rig.slots.slot_path("b").read_bytes() == rig.release.image
    assert (rig.installer.system / "installed-b").read_bytes() == rig.release.image
    assert rig.installer.steps() == ["install", "boot", "health", "confirm"]
    record = rig.slots.load()
    assert (record.active, record.pending, record.outbox) == ("b", None, ())
    ident = rig.identity()
    assert (ident.sequence, ident.version, ident.device_class) == (21, "2.1.0", CLASS)
    # Each chunk fetched exactly once.
    assert sorted(rig.server.fetches) == list(range(len(rig.release.sealed)))
    # Reports: accepted, progress at most every 10%, verified, installed, confirmed.
    states = rig.reports.states()
    assert states[0] == "downloading" and rig.reports.bodies[0]["progress"] == 0
    assert states[-3:] == ["verified", "installed", "confirmed"]
    progress = [b["progress"] for b in rig.reports.bodies if b["state"] == "downloading"]
    assert progress == sorted(progress) and len(progress) <= 11
    assert all(b // 10 < a // 10 for b, a in itertools.pairwise(progress))
    assert all(b["release"] == "rel-21" for b in rig.reports.bodies)


def test_the_next_update_goes_to_the_other_slot(tmp_path: Path, fw_image: bytes) -> None:
    rig = make_rig(tmp_path, fw_image)
    _confirmed(rig)
    nxt = publish(fw_image[::-1], release_id="rel-22", sequence=22, version="2.2.0")
    rig.server.release = nxt
    rig.release = nxt
    result = rig.updater().handle(rig.offer())
    assert result.state is S.CONFIRMED
    assert rig.slots.load().active == "a"
    assert rig.slots.slot_path("a").read_bytes() == fw_image[::-1]
    assert rig.identity().sequence == 22


def _refused(rig: Rig, reason: str, **offer: object) -> None:
    before = rig.identity().to_json()
    result = rig.updater().handle(rig.offer(**offer))
    assert (result.state, result.reason) == (S.REFUSED, reason)
    assert rig.reports.last() == {"release": "rel-21", "state": "refused", "reason": reason}
    assert rig.installer.calls == []
    assert rig.identity().to_json() == before
    record = rig.slots.load()
    assert (record.active, record.pending, record.outbox) == ("a", None, ())


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ({"sequence": 20}, "rollback"),
        ({"sequence": 3}, "rollback"),
        ({"device_class": "acme-meter-v1"}, "wrong_class"),
        ({"expires_at": NOW + 30}, "expired"),
        ({"issued_at": NOW + 3600, "expires_at": NOW + DAY}, "expired"),
        ({"min_version": "2.0.1"}, "below_min_version"),
        ({"sha256": b"\x01" * 32}, "digest_mismatch"),
    ],
)
def test_policy_refusals_are_reported_with_their_reason(
    tmp_path: Path, fw_image: bytes, manifest: dict[str, object], reason: str
) -> None:
    _refused(make_rig(tmp_path, fw_image, **manifest), reason)


def test_an_image_larger_than_the_slot_is_refused(rig: Rig) -> None:
    rig.max_image_size = len(rig.release.image) - 1
    _refused(rig, "too_large")


@pytest.mark.parametrize(
    ("trust", "reason"),
    [
        (TrustStore(), "untrusted_key"),
        (TrustStore.of(fw_key(b"someone-else").public()), "untrusted_key"),
        (TrustStore.of(fw_key().public()).revoke(fw_key().kid, NOW - 5), "revoked_key"),
        (TrustStore.of(fw_key().public()).retire(fw_key().kid, NOW - 5), "retired_key"),
    ],
)
def test_key_refusals_are_reported(
    tmp_path: Path, fw_image: bytes, trust: TrustStore, reason: str
) -> None:
    _refused(make_rig(tmp_path, fw_image, trust=trust), reason)


def test_a_manifest_signed_by_the_servers_message_key_is_refused(rig: Rig) -> None:
    # The server's ES256 message key, even listed in the device's trust (it cannot be:
    # only Ed25519 keys are firmware keys), is refused by the algorithm allow-list.
    server_key = generate_signing_key(random=SeededRandom(b"server"))
    forged = _jws_es256(make_manifest(rig.release.image), server_key)
    _refused(rig, "invalid", manifest=forged)


def _jws_es256(manifest: Manifest, key: object) -> str:
    from hatchway.firmware.manifest import MANIFEST_TYP
    from hatchway.msgsec import _jose
    from hatchway.msgsec._codec import dumps

    header = {"alg": "ES256", "kid": fw_key().kid, "typ": MANIFEST_TYP}
    return _jose.jws_encode(header, dumps(manifest.to_claims()), key.key).decode()  # type: ignore[attr-defined]


def test_a_tampered_manifest_and_a_key_for_another_device_are_invalid(rig: Rig) -> None:
    token = rig.release.manifest.decode()
    head, payload, sig = token.split(".")
    _refused(rig, "invalid", manifest=f"{head}.{payload}.{sig[:-4]}AAAA")
    from hatchway.msgsec.keys import generate_decryption_key

    other = generate_decryption_key("P-256", random=SeededRandom(b"other"))
    _refused(rig, "invalid", key=rig.release.offer(other).key)


def test_a_bad_rotation_is_refused(tmp_path: Path, fw_image: bytes) -> None:
    new = fw_key(b"fw-key-2")
    bogus = Rotation(new.public(), NOW + DAY, rotation_proof(new, "some-other-kid", 21))
    _refused(make_rig(tmp_path, fw_image, rotation=bogus), "bad_rotation")


def test_a_corrupted_chunk_is_fetched_again_and_never_installed(rig: Rig) -> None:
    rig.server.flip_once = {3, 17}
    updater = rig.updater()
    result = updater.handle(rig.offer())
    assert result.state is S.CONFIRMED
    assert updater.refetched == 2
    assert rig.server.fetches.count(3) == 2 and rig.server.fetches.count(17) == 2
    assert (rig.installer.system / "installed-b").read_bytes() == rig.release.image


def test_a_chunk_that_keeps_failing_stops_the_download_unwritten(rig: Rig) -> None:
    rig.server.always_bad = {5}
    with pytest.raises(DownloadInterrupted, match="chunk 5"):
        rig.updater().handle(rig.offer())
    assert rig.installer.calls == []
    pending = rig.slots.load().pending
    assert pending is not None and pending.phase is Phase.DOWNLOADING
    chunk = len(rig.release.sealed[0]) - 28
    slot = rig.slots.slot_path("b").read_bytes()
    assert slot[5 * chunk : 6 * chunk] == bytes(chunk)  # never written
    state = rig.slots.load_download()
    assert state is not None and not state.has(5) and state.has(4)
    # The server mends its copy: the next run fetches only chunk 5 and finishes.
    rig.server.always_bad.clear()
    fetched = len(rig.server.fetches)
    assert rig.updater().resume().state is S.CONFIRMED  # type: ignore[union-attr]
    assert rig.server.fetches[fetched:] == [5, *range(6, len(rig.release.sealed))]


def test_an_interrupted_download_resumes_without_refetching(rig: Rig) -> None:
    rig.server.down_after = 11
    with pytest.raises(DownloadInterrupted):
        rig.updater().handle(rig.offer())
    rig.server.down_after = None
    result = rig.updater().resume()  # a new process: everything from disk
    assert result is not None and result.state is S.CONFIRMED
    assert sorted(rig.server.fetches) == list(range(len(rig.release.sealed)))


def test_a_failed_health_check_rolls_back_and_reports(rig: Rig) -> None:
    rig.installer.healthy = False
    before = rig.identity().to_json()
    result = rig.updater().handle(rig.offer())
    assert (result.state, result.reason) == (S.ROLLED_BACK, "health_check_failed")
    assert rig.installer.calls[-2:] == [("health", "b"), ("rollback", "a")]
    assert (rig.installer.system / "running").read_text() == "a"
    assert rig.slots.load().active == "a" and rig.slots.load().pending is None
    assert rig.identity().to_json() == before
    assert rig.reports.last() == {
        "release": "rel-21",
        "state": "rolled_back",
        "reason": "health_check_failed",
    }
    # Offered again, it is reported again, not installed again.
    calls = len(rig.installer.calls)
    again = rig.updater().handle(rig.offer())
    assert (again.state, again.reason) == (S.ROLLED_BACK, "health_check_failed")
    assert len(rig.installer.calls) == calls


@pytest.mark.parametrize("step", ["install", "boot"])
def test_an_installer_failure_before_boot_rolls_back(rig: Rig, step: str) -> None:
    rig.installer.fail = {step}
    result = rig.updater().handle(rig.offer())
    assert (result.state, result.reason) == (S.ROLLED_BACK, "install_failed")
    assert ("confirm", "b") not in rig.installer.calls
    assert rig.identity().sequence == 20


def test_a_failing_confirm_step_rolls_back(rig: Rig) -> None:
    rig.installer.fail = {"confirm"}
    result = rig.updater().handle(rig.offer())
    assert (result.state, result.reason) == (S.ROLLED_BACK, "health_check_failed")
    assert rig.identity().sequence == 20


def test_not_confirmed_in_time_after_a_reboot_rolls_back(rig: Rig) -> None:
    # The boot step "reboots": the process dies; it comes back after the deadline.
    rig.installer.kill_in = {"health"}
    with pytest.raises(BaseException, match="killed in health"):
        rig.updater().handle(rig.offer(confirm_within=120))
    pending = rig.slots.load().pending
    assert pending is not None and pending.phase is Phase.BOOTED
    rig.clock.advance(121)
    result = rig.updater().resume()
    assert result is not None and (result.state, result.reason) == (
        S.ROLLED_BACK,
        "confirm_timeout",
    )
    assert rig.installer.steps().count("health") == 1  # not checked again after the deadline
    assert rig.installer.calls[-1] == ("rollback", "a")
    assert rig.identity().sequence == 20


@pytest.mark.parametrize("healthy", [True, False])
def test_a_health_check_that_ends_past_the_deadline_rolls_back(rig: Rig, healthy: bool) -> None:
    # Healthy too late, or stopped by the deadline: either way the reason is the timeout.
    rig.installer.health_takes = 700
    rig.installer.healthy = healthy
    result = rig.updater().handle(rig.offer(confirm_within=600))
    assert (result.state, result.reason) == (S.ROLLED_BACK, "confirm_timeout")
    assert "confirm" not in rig.installer.steps()


def test_back_within_the_deadline_the_update_confirms(rig: Rig) -> None:
    rig.installer.kill_in = {"health"}
    with pytest.raises(BaseException, match="killed in health"):
        rig.updater().handle(rig.offer(confirm_within=120))
    rig.clock.advance(60)
    assert rig.updater().resume().state is S.CONFIRMED  # type: ignore[union-attr]


def _rotating_rig(tmp_path: Path, fw_image: bytes) -> tuple[Rig, str]:
    new = fw_key(b"fw-key-2")
    rotation = Rotation(new.public(), NOW + 30 * DAY, rotation_proof(new, fw_key().kid, 21))
    return make_rig(tmp_path, fw_image, rotation=rotation), new.kid


def test_a_rotation_is_learnt_only_on_confirm(tmp_path: Path, fw_image: bytes) -> None:
    rig, new_kid = _rotating_rig(tmp_path, fw_image)
    rig.installer.healthy = False
    assert rig.updater().handle(rig.offer()).state is S.ROLLED_BACK
    assert new_kid not in rig.identity().trust  # a rolled-back update taught nothing

    rig2, new_kid = _rotating_rig(tmp_path / "2", fw_image)
    assert rig2.updater().handle(rig2.offer()).state is S.CONFIRMED
    trust = rig2.identity().trust
    new, old = trust.get(new_kid), trust.get(fw_key().kid)
    assert new is not None and new.status is KeyStatus.ACTIVE
    assert old is not None and old.status is KeyStatus.RETIRED and old.not_after == NOW + 30 * DAY


def test_killed_after_the_commit_point_finishes_without_applying_twice(
    tmp_path: Path, fw_image: bytes
) -> None:
    rig, new_kid = _rotating_rig(tmp_path, fw_image)
    # Killed right after the identity was committed, before the record moved on.
    commit = rig.identity.commit

    def commit_then_die(identity: FirmwareIdentity) -> None:
        commit(identity)
        raise Killed("after commit")

    updater = rig.updater()
    updater._commit = commit_then_die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        updater.handle(rig.offer())
    assert rig.slots.load().pending.phase is Phase.CONFIRMED  # type: ignore[union-attr]
    result = rig.updater().resume()
    assert result is not None and result.state is S.CONFIRMED
    assert rig.identity().sequence == 21 and new_kid in rig.identity().trust
    assert rig.installer.steps().count("install") == 1
    assert rig.reports.states().count("confirmed") == 1


def test_reports_wait_in_the_outbox_while_the_server_is_away(rig: Rig) -> None:
    rig.installer.healthy = False
    rig.reports.up = False
    result = rig.updater().handle(rig.offer())
    assert result.state is S.ROLLED_BACK
    outbox = rig.slots.load().outbox
    assert [r["state"] for r in outbox] == [
        "downloading",
        "verified",
        "installed",
        "rolled_back",
    ]
    rig.reports.up = True
    assert rig.updater().resume() is None  # nothing pending; the outbox is delivered
    assert rig.reports.states() == ["downloading", "verified", "installed", "rolled_back"]
    assert rig.slots.load().outbox == ()


def test_a_newer_offer_replaces_an_unfinished_download(rig: Rig, fw_image: bytes) -> None:
    rig.server.down_after = 4
    with pytest.raises(DownloadInterrupted):
        rig.updater().handle(rig.offer())
    newer = publish(fw_image[::-1], release_id="rel-22", sequence=22, version="2.2.0")
    rig.release = rig.server.release = newer
    rig.server.down_after = None
    result = rig.updater().handle(rig.offer())
    assert (result.release, result.state) == ("rel-22", S.CONFIRMED)
    assert rig.slots.slot_path("b").read_bytes() == fw_image[::-1]


def test_a_refused_offer_leaves_an_unfinished_download_alone(rig: Rig) -> None:
    rig.server.down_after = 4
    with pytest.raises(DownloadInterrupted):
        rig.updater().handle(rig.offer())
    stale = publish(rig.release.image, release_id="old-19", sequence=19)
    result = rig.updater().handle(stale.offer(rig.device_key))
    assert (result.release, result.reason) == ("old-19", "rollback")
    pending = rig.slots.load().pending
    assert pending is not None and pending.offer.release == "rel-21"


def test_killed_during_install_runs_the_install_step_again(rig: Rig) -> None:
    rig.installer.kill_in = {"install"}
    with pytest.raises(Killed):
        rig.updater().handle(rig.offer())
    # The record says "installing": the install step is simply run again.
    assert rig.updater().resume().state is S.CONFIRMED  # type: ignore[union-attr]
    assert rig.installer.steps().count("install") == 2


def test_a_slot_damaged_after_verification_is_repaired_before_install(rig: Rig) -> None:
    # Killed while reporting "verified": the record says verified, the install has not run.
    rig.reports.kill_on = "verified"
    with pytest.raises(Killed):
        rig.updater().handle(rig.offer())
    assert rig.slots.load().pending.phase is Phase.VERIFIED  # type: ignore[union-attr]
    with rig.slots.slot_path("b").open("r+b") as fh:  # the slot changes while we are down
        fh.seek(70000)
        fh.write(b"\xff")
    result = rig.updater().resume()
    assert result is not None and result.state is S.CONFIRMED
    assert rig.server.fetches.count(1) == 2  # chunk 1 (bytes 65536..) fetched again
    assert (rig.installer.system / "installed-b").read_bytes() == rig.release.image


def test_sign_manifest_helper_matches_the_published_one(rig: Rig) -> None:
    assert sign_manifest(make_manifest(rig.release.image), fw_key()) == rig.release.manifest
