"""Kill the updater anywhere and restart it from disk: it always ends where it should.

Hypothesis picks where the "kill -9" lands (a chunk fetch, a report, an installer
step) and which chunks were already in place before the run; the device is rebuilt
from its files after each kill, like a restarted process. Properties: the update
ends confirmed with the exact image, the identity is committed once, and no chunk in
place is fetched again (only the one in flight when killed may be).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.device.firmware import Phase, SlotDir
from hatchway.firmware import ChunkAssembler, DownloadState, split_chunks
from hatchway.firmware.files import FileImage
from hatchway.firmware.wire import DeviceFirmwareState as S
from tests.device_firmware.conftest import Killed, make_rig
from tests.firmware.conftest import image_bytes, make_manifest

IMAGE = image_bytes(9 * 65536 + 99)  # 10 chunks
CHUNKS = split_chunks(IMAGE)

kill_points = st.lists(
    st.one_of(
        st.tuples(st.just("fetch"), st.integers(0, 12)),
        st.tuples(st.just("report"), st.sampled_from(["downloading", "verified", "installed"])),
        st.tuples(st.just("step"), st.sampled_from(["install", "boot", "health", "confirm"])),
    ),
    max_size=4,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kills=kill_points)
def test_any_sequence_of_kills_ends_confirmed(kills: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(Path(tmp), IMAGE)
        rig.clock.advance(0)
        offer = rig.offer(confirm_within=3600)
        result = None
        for kind, where in [*kills, ("none", None)]:
            rig.server.kill_at = len(rig.server.fetches) + where if kind == "fetch" else None  # type: ignore[operator]
            rig.reports.kill_on = where if kind == "report" else None  # type: ignore[assignment]
            rig.installer.kill_in = {where} if kind == "step" else set()  # type: ignore[arg-type]
            updater = rig.updater()  # a fresh process, from disk
            try:
                outcome = updater.resume()
                if outcome is None and rig.slots.load().active == "a":
                    outcome = updater.handle(offer)
            except Killed:
                continue
            result = outcome or result  # a round after the end has nothing to do
        # The last round ran without a kill.
        assert result is not None and result.state is S.CONFIRMED, result
        assert (rig.installer.system / "installed-b").read_bytes() == IMAGE
        assert rig.slots.load().active == "b" and rig.slots.load().pending is None
        assert rig.identity().sequence == 21
        assert rig.reports.states().count("confirmed") == 1
        # A chunk is fetched again only if a kill hit while it was in flight.
        fetch_kills = sum(1 for k, _ in kills if k == "fetch")
        assert len(rig.server.fetches) <= len(CHUNKS) + fetch_kills


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(have=st.sets(st.integers(0, len(CHUNKS) - 1)))
def test_resume_fetches_exactly_the_missing_chunks(have: set[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(Path(tmp), IMAGE)
        # A run that got some chunks in place (any subset, in any order) and was killed.
        rig.server.kill_at = 0
        with contextlib.suppress(Killed):
            rig.updater().handle(rig.offer())
        slots: SlotDir = rig.slots
        pending = slots.load().pending
        assert pending is not None and pending.phase is Phase.DOWNLOADING
        manifest = make_manifest(IMAGE)
        with FileImage(slots.slot_path("b"), manifest.size) as image:
            assembler = ChunkAssembler(manifest, image, DownloadState.fresh(manifest))
            for index in sorted(have, key=lambda i: (i * 7) % len(CHUNKS)):
                assembler.receive(index, CHUNKS[index])
            slots.save_download(assembler.state)
        rig.server.kill_at = None
        result = rig.updater().resume()
        assert result is not None and result.state is S.CONFIRMED
        assert sorted(rig.server.fetches) == sorted(set(range(len(CHUNKS))) - have)
        assert slots.slot_path("b").read_bytes() == IMAGE
