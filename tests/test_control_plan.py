"""The control loop's scheduling rules, without processes: placement, staleness, blending."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bus.clock import ClockSteps
from core.action_plan import (
    ActionPlan,
    LatencyEstimate,
    max_latency_without_stall,
    stall_bound_fraction,
    too_slow_report,
)

DT = 0.1


def chunk(values: list[float]) -> np.ndarray:
    return np.array(values, np.float32)[:, None].repeat(2, axis=1)


def test_actions_land_on_the_tick_of_their_execution_time() -> None:
    plan = ActionPlan(DT, epoch=100.0, blend="latest")
    assert plan.add(chunk([1, 2, 3]), t_obs=100.0 + 5 * DT) == 0
    assert sorted(plan.slots) == [5, 6, 7]
    assert plan.take(4) is None
    slot = plan.take(5)
    assert slot is not None and slot.action[0] == 1
    assert slot.intended == pytest.approx(100.5)
    assert plan.ahead(5) == 2


def test_actions_whose_tick_has_run_are_skipped_and_counted() -> None:
    plan = ActionPlan(DT, epoch=0.0, blend="latest")
    for tick in range(10):
        plan.take(tick)
    # Observed at tick 7, arriving after tick 9 ran: actions for ticks 7, 8, 9 are stale.
    assert plan.add(chunk([1, 2, 3, 4, 5]), t_obs=7 * DT) == 3
    assert plan.skipped == 3
    assert sorted(plan.slots) == [10, 11]


@pytest.mark.parametrize(
    ("blend", "expected"), [("latest", 10.0), ("average", 5.5), ("weighted", 7.75)]
)
def test_overlapping_chunks_blend(blend: str, expected: float) -> None:
    plan = ActionPlan(DT, epoch=0.0, blend=blend, weight=0.75)
    plan.add(chunk([1, 1, 1]), t_obs=0.0)
    plan.add(chunk([10, 10]), t_obs=DT)  # overlaps ticks 1 and 2
    assert plan.slots[0].action[0] == 1
    assert plan.slots[1].action[0] == pytest.approx(expected)
    assert plan.slots[1].chunks == (1 if blend == "latest" else 2)


def test_weighted_blend_has_no_jump_at_the_hand_over() -> None:
    plan = ActionPlan(DT, epoch=0.0, blend="weighted", weight=0.5)
    plan.add(chunk([0] * 8), t_obs=0.0)
    plan.add(chunk([10] * 8), t_obs=4 * DT)
    values = [plan.take(t).action[0] for t in range(12)]
    steps = np.abs(np.diff(values))
    # Hand-over in two half-steps instead of one jump of 10.
    assert steps.max() <= 5.0 + 1e-6


def test_synchronous_placement_runs_a_chunk_from_its_first_action() -> None:
    plan = ActionPlan(DT, epoch=0.0, blend="latest")
    plan.take(20)
    assert plan.add(chunk([1, 2, 3]), t_obs=0.0, first_tick=21) == 0
    assert sorted(plan.slots) == [21, 22, 23]
    assert plan.slots[21].intended == 0.0  # and so it runs 2.1 s late


def test_a_clock_step_keeps_every_action_on_its_tick() -> None:
    plan = ActionPlan(DT, epoch=100.0, blend="latest")
    plan.add(chunk([1, 2, 3]), t_obs=100.0 + 5 * DT)
    plan.shift_clock(600.0)
    # A chunk observed at tick 6 on the stepped clock lands on tick 6, not 6000 ticks later.
    assert plan.add(chunk([9, 9]), t_obs=700.0 + 6 * DT) == 0
    assert sorted(plan.slots) == [5, 6, 7]
    slot = plan.take(5)
    assert slot is not None and slot.action[0] == 1
    assert slot.intended == pytest.approx(700.5)
    assert plan.take(6).action[0] == 9


def test_clock_steps_are_reported_once_and_slewing_only_when_it_adds_up(monkeypatch) -> None:
    wall = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + wall["offset"])
    steps = ClockSteps(tolerance=0.05)
    assert steps.check() == 0.0
    wall["offset"] = 17.5  # a VM snapshot: the wall clock resumes ahead of the monotonic one
    assert steps.check() == pytest.approx(17.5, abs=0.01)
    assert steps.check() == 0.0  # reported once
    wall["offset"] -= 0.03  # NTP slewing: below the tolerance, let through
    assert steps.check() == 0.0
    wall["offset"] -= 0.03  # ... until it adds up to it
    assert steps.check() == pytest.approx(-0.06, abs=0.01)
    wall["offset"] -= 3600.0  # set back an hour
    assert steps.check() == pytest.approx(-3600.0, abs=0.01)
    with pytest.raises(ValueError, match="tolerance"):
        ClockSteps(tolerance=0.0)


def test_unknown_blend_is_refused() -> None:
    with pytest.raises(ValueError, match="blend 'smooth'"):
        ActionPlan(DT, 0.0, blend="smooth")


def test_latency_estimate_uses_a_high_percentile() -> None:
    est = LatencyEstimate(window=10, percentile=90, initial=0.7)
    assert est.value() == 0.7
    for v in [0.1] * 9 + [0.5]:
        est.add(v)
    assert 0.1 < est.value() <= 0.5


def test_stall_bound() -> None:
    assert stall_bound_fraction(0.25, 16, 1 / 30) == 0.0
    assert stall_bound_fraction(0.4, 16, 1 / 30) == pytest.approx((0.8 - 16 / 30) / 0.4)


def test_stall_bound_with_several_workers() -> None:
    chunk_s = 16 / 30
    # One worker: half a chunk; two: two thirds; three: three quarters.
    assert max_latency_without_stall(16, 1 / 30, 1) == pytest.approx(chunk_s / 2)
    assert max_latency_without_stall(16, 1 / 30, 2) == pytest.approx(chunk_s * 2 / 3)
    assert stall_bound_fraction(0.35, 16, 1 / 30, workers=2) == 0.0
    # 400 ms with 2 workers: requests every 200 ms, each chunk stale by 600 ms of 533.
    assert stall_bound_fraction(0.4, 16, 1 / 30, workers=2) == pytest.approx((0.6 - chunk_s) / 0.2)
    assert stall_bound_fraction(0.4, 16, 1 / 30, workers=3) == 0.0


def test_prefix_is_the_plan_from_the_next_tick_with_the_committed_count() -> None:
    plan = ActionPlan(DT, epoch=0.0, blend="latest")
    plan.add(chunk(list(range(10))), t_obs=0.0)  # ticks 0..9
    for tick in range(3):
        plan.take(tick)
    # Observed at tick 3; the reply is expected at 0.55 s: ticks 3, 4, 5 run whatever happens.
    actions, start, committed = plan.prefix(3 * DT, 0.55, limit=16)
    assert start == 0 and committed == 3
    np.testing.assert_array_equal(actions[:, 0], [3, 4, 5, 6, 7, 8, 9])
    hard, _, n = plan.prefix(3 * DT, 0.55, limit=16, soft=False)
    assert len(hard) == n == 3
    # Never past the chunk the policy can plan.
    assert len(plan.prefix(3 * DT, 0.55, limit=4)[0]) == 4
    # The observation may be older than the next tick: start says where the prefix begins.
    assert plan.prefix(1 * DT, 0.55, limit=16)[1] == 2
    assert ActionPlan(DT, 0.0).prefix(0.0, 1.0, limit=16) is None


@pytest.mark.parametrize(("blend", "jump"), [("latest", 10.0), ("weighted", 5.0)])
def test_seam_jumps_are_measured_where_a_chunk_takes_over(blend: str, jump: float) -> None:
    plan = ActionPlan(DT, epoch=0.0, blend=blend, weight=0.5)
    plan.add(chunk([0] * 8), t_obs=0.0)
    assert not plan.seams  # nothing planned before: no seam
    plan.take(0)
    plan.take(1)
    plan.add(chunk([10] * 8), t_obs=0.0)  # ticks 0, 1 stale; tick 2 is the seam
    assert list(plan.seams) == [pytest.approx(jump)]
    plan.add(chunk([10] * 8), t_obs=2 * DT)  # the same plan again
    assert plan.seams[-1] == pytest.approx(0.0 if blend == "latest" else 2.5)


def test_too_slow_report_names_the_bound_and_the_fix() -> None:
    assert too_slow_report(0.25, 16, 1 / 30, workers=1) is None  # within half a chunk
    report = too_slow_report(0.4, 16, 1 / 30, workers=1)
    assert report["max_latency_ms"] == pytest.approx(16 / 30 / 2 * 1000)
    assert "3 policy workers" in report["text"]  # 0.4 / (0.533 - 0.4) = 3
    assert too_slow_report(0.4, 16, 1 / 30, workers=3) is None
