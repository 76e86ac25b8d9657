"""Property tests for the rollout parsers and tables (issue 9): waves, reports, chunk paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.firmware.rollout import (
    DEVICE_FW_TRANSITIONS,
    FINAL,
    ROLLOUT_TRANSITIONS,
    FwState,
    RolloutState,
    check_report,
    next_step,
    plan_waves,
)
from hatchway.firmware.wire import DeviceFirmwareState
from hatchway.server.fw_chunks import parse_chunk_path

WAVE = st.one_of(st.integers(-5, 500).map(str), st.integers(-5, 150).map(lambda p: f"{p}%"))


@given(st.lists(WAVE, min_size=1, max_size=6), st.integers(1, 300))
def test_waves_are_cumulative_growing_and_bounded(parts: list[str], members: int) -> None:
    try:
        plan = plan_waves(",".join(parts), members)
    except ValueError:
        return
    assert plan == sorted(set(plan)) and plan[0] > 0 and plan[-1] <= members


@given(st.text(max_size=40), st.integers(0, 50))
def test_wave_specs_never_crash(spec: str, members: int) -> None:
    try:
        plan = plan_waves(spec, members)
    except ValueError:
        return
    assert all(0 < n <= members for n in plan)


@pytest.mark.parametrize(
    ("spec", "members", "plan"),
    [
        ("10%,50%,100%", 10, [1, 5, 10]),
        ("10%,100%", 3, [1, 3]),
        ("5,20", 8, [5, 8]),
        ("1%", 1, [1]),
    ],
)
def test_wave_examples(spec: str, members: int, plan: list[int]) -> None:
    assert plan_waves(spec, members) == plan


@given(st.one_of(st.none(), st.text(max_size=12), st.integers()), st.one_of(
    st.none(), st.text(max_size=24), st.integers()), st.one_of(st.none(), st.integers(-3, 104),
    st.booleans(), st.text(max_size=3)))  # fmt: skip
def test_report_fields_parse_to_a_device_state_or_refuse(
    state: Any, reason: Any, progress: Any
) -> None:
    try:
        parsed = check_report(state, reason, progress)
    except ValueError:
        return
    assert parsed.value in set(DeviceFirmwareState)
    assert parsed not in (FwState.PENDING, FwState.OFFERED, FwState.WITHDRAWN)


@given(st.text(max_size=60))
def test_chunk_paths_have_one_spelling(suffix: str) -> None:
    parsed = parse_chunk_path("/fw/" + suffix)
    if parsed is not None:
        release, index = parsed
        assert f"/fw/{release}/{index}" == "/fw/" + suffix


def test_tables_are_closed_and_final_states_are_final() -> None:
    for targets in DEVICE_FW_TRANSITIONS.values():
        assert targets <= set(FwState)
    assert {FwState.CONFIRMED, FwState.ROLLED_BACK, FwState.REFUSED, FwState.WITHDRAWN} == FINAL
    # No device report ever takes a device back to a server-only state.
    for source, targets in DEVICE_FW_TRANSITIONS.items():
        if source is not FwState.PENDING:
            assert FwState.PENDING not in targets and FwState.OFFERED not in targets
    assert ROLLOUT_TRANSITIONS[RolloutState.CANCELLED] == frozenset()


@given(
    st.sampled_from(list(RolloutState)),
    st.integers(0, 4),
    st.integers(0, 6),
    st.integers(0, 6),
    st.booleans(),
    st.booleans(),
)
def test_next_step_only_moves_along_the_rollout_table(
    state: RolloutState, wave: int, failures: int, max_failures: int, done: bool, failed: bool
) -> None:
    step = next_step(
        state, wave, 5, failures=failures, max_failures=max_failures, wave_done=done,
        failed_now=failed,
    )  # fmt: skip
    assert step.state is state or step.state in ROLLOUT_TRANSITIONS[state]
    if failed and failures > max_failures and state is RolloutState.ACTIVE:
        assert step.state is RolloutState.PAUSED and step.open_wave is None
