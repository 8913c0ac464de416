"""core.safety: goal validation, clamping, step limits, watchdog hold and e-stop latch."""

from __future__ import annotations

import numpy as np
import pytest

from core.safety import (
    RESUMED,
    WAITING_AFTER_ESTOP,
    WAITING_FOR_FIRST_GOAL,
    GoalGuard,
    SafetyLimits,
    joint_limits,
    per_joint,
)

N = 6
PERIOD = 0.01
LIMITS = SafetyLimits(
    lower=np.array([-90.0, -90, -90, -90, -180, 0]),
    upper=np.array([90.0, 90, 90, 90, 180, 100]),
    max_step=np.full(N, 5.0),
    period_s=PERIOD,
    max_goal_age_s=0.2,
    watchdog_s=0.5,
    resume_scale=0.2,
    resume_ramp_s=0.1,
)
HOME = np.zeros(N)


def tracking_guard(goal: np.ndarray, t: float = 0.0) -> GoalGuard:
    """A guard that has started (holding at HOME) and accepted `goal` at time `t`."""
    guard = GoalGuard(LIMITS)
    guard.command(HOME, t)
    assert guard.offer(goal, 0.0, t) is None
    return guard


def test_starts_holding_the_present_position() -> None:
    guard = GoalGuard(LIMITS)
    present = np.array([10.0, -5, 3, 0, 0, 50])
    cmd = guard.command(present, 0.0)
    assert cmd.holding and cmd.reason == WAITING_FOR_FIRST_GOAL
    np.testing.assert_array_equal(cmd.goal, present)
    # still there while the arm drifts: a hold is a fixed target, not "wherever the arm is"
    np.testing.assert_array_equal(guard.command(present + 1, PERIOD).goal, present)


@pytest.mark.parametrize(
    ("goal", "age", "reason"),
    [
        (np.zeros(5), 0.0, "length"),
        (np.zeros(12), 0.0, "length"),
        (np.array([0, 0, np.nan, 0, 0, 0]), 0.0, "nan"),
        (np.array([0, 0, 0, np.inf, 0, 0]), 0.0, "nan"),
        (np.zeros(N), 0.5, "stale"),
    ],
)
def test_bad_goals_are_rejected_and_counted(goal: np.ndarray, age: float, reason: str) -> None:
    guard = GoalGuard(LIMITS)
    assert guard.offer(goal, age, 0.0) == reason
    assert guard.rejected[reason] == 1 and guard.accepted == 0
    cmd = guard.command(HOME, PERIOD)
    assert cmd.holding and cmd.reason == WAITING_FOR_FIRST_GOAL  # the bad goal did nothing


def test_goal_in_the_future_is_not_stale() -> None:
    assert GoalGuard(LIMITS).offer(np.zeros(N), -0.3, 0.0) is None


def test_goals_are_clamped_to_the_limits() -> None:
    goal = np.array([500.0, -500, 0, 0, 0, 150])
    guard = tracking_guard(goal)
    t, cmd = 0.0, None
    for _ in range(200):
        t += PERIOD
        guard.offer(goal, 0.0, t)
        cmd = guard.command(HOME, t)
    assert not cmd.holding and guard.clamped_range == 201
    np.testing.assert_allclose(cmd.goal, [90, -90, 0, 0, 0, 100])


def test_step_limit_per_tick_ramps_toward_the_goal() -> None:
    guard = tracking_guard(np.array([100.0, 0, 0, 0, 0, 0]))
    # Leaving the start hold is a resume: a fifth of the step, ramping up to the full step.
    goals = [0.0] + [guard.command(HOME, k * PERIOD).goal[0] for k in range(1, 20)]
    steps = np.diff(goals)
    assert steps[0] == pytest.approx(5.0 * 0.2)
    assert np.all(np.diff(steps) >= -1e-9)  # never slowing down on the way
    assert steps.max() <= 5.0 + 1e-9
    assert steps[-1] == pytest.approx(5.0)  # ramp over: full speed
    assert guard.clamped_step == 19


def test_step_limit_is_a_speed_however_often_commands_come() -> None:
    guard = tracking_guard(np.array([50.0, 0, 0, 0, 0, 0]))
    t, last = 0.0, 0.0
    for _ in range(100):  # ten commands per tick: still at most max_step per tick in total
        t += PERIOD / 10
        last = guard.command(HOME, t).goal[0]
    assert last <= 10 * 5.0 + 1e-9


def test_watchdog_holds_present_position_then_resumes_smoothly() -> None:
    guard = tracking_guard(np.array([20.0, 0, 0, 0, 0, 0]))
    t = 0.0
    while t < 0.4:
        t += PERIOD
        guard.command(HOME, t)
    assert not guard.holding
    arm_is_at = np.array([18.0, 1, 0, 0, 0, 0])
    cmd = guard.command(arm_is_at, 0.6)  # 0.6 s after the only goal: watchdog
    assert cmd.holding and "watchdog" in cmd.reason
    np.testing.assert_array_equal(cmd.goal, arm_is_at)
    assert guard.counters()["hold_reason"] == cmd.reason

    assert guard.offer(np.array([40.0, 1, 0, 0, 0, 0]), 0.0, 0.7) is None
    resumed = guard.command(arm_is_at, 0.7)
    assert not resumed.holding and resumed.reason == RESUMED
    assert resumed.goal[0] - 18.0 <= 5.0 * 0.2 + 1e-9  # rate limited at the resume speed


def test_estop_latches_until_cleared_and_a_fresh_goal_comes() -> None:
    guard = tracking_guard(np.array([30.0, 0, 0, 0, 0, 0]))
    for k in range(1, 5):
        guard.command(HOME, k * PERIOD)
    where = np.array([3.0, 0, 0, 0, 0, 0])
    guard.engage_estop(where, "operator")
    cmd = guard.command(where + 2, 5 * PERIOD)
    assert cmd.holding and cmd.reason == "e-stop: operator" and guard.estop
    np.testing.assert_array_equal(cmd.goal, where)

    assert guard.offer(np.zeros(N), 0.0, 6 * PERIOD) == "estop"
    assert guard.command(where, 7 * PERIOD).holding

    guard.clear_estop()
    cmd = guard.command(where, 8 * PERIOD)  # cleared, but the goal before the e-stop is gone
    assert cmd.holding and cmd.reason == WAITING_AFTER_ESTOP
    np.testing.assert_array_equal(cmd.goal, where)

    assert guard.offer(np.array([30.0, 0, 0, 0, 0, 0]), 0.0, 9 * PERIOD) is None
    cmd = guard.command(where, 9 * PERIOD)
    assert not cmd.holding and 3.0 < cmd.goal[0] <= 3.0 + 5.0 * 0.2 + 1e-9


def test_estop_before_any_position_holds_the_first_one_read() -> None:
    guard = GoalGuard(LIMITS)
    guard.engage_estop(None, "operator")  # the arm was never read: nothing made up
    present = np.array([7.0, 0, 0, 0, 0, 20])
    cmd = guard.command(present, 0.0)
    assert cmd.holding and cmd.reason == "e-stop: operator"
    np.testing.assert_array_equal(cmd.goal, present)


def test_reanchor_holds_where_the_arm_is_now() -> None:
    guard = tracking_guard(np.array([30.0, 0, 0, 0, 0, 0]))
    guard.command(HOME, PERIOD)
    moved = np.array([-40.0, 10, 0, 0, 0, 0])
    guard.reanchor(moved, "reconnected")
    cmd = guard.command(moved, 2 * PERIOD)
    assert cmd.holding and cmd.reason == "reconnected"
    np.testing.assert_array_equal(cmd.goal, moved)


def test_commands_never_leave_the_limits_or_jump() -> None:
    rng = np.random.default_rng(0)
    guard = GoalGuard(LIMITS)
    last = guard.command(HOME, 0.0).goal
    for k in range(1, 2000):
        t = k * PERIOD
        if rng.random() < 0.7:
            guard.offer(rng.uniform(-400, 400, N), 0.0, t)
        cmd = guard.command(HOME, t)
        if not cmd.holding:
            assert np.all(cmd.goal >= LIMITS.lower - 1e-9)
            assert np.all(cmd.goal <= LIMITS.upper + 1e-9)
            assert np.all(np.abs(cmd.goal - last) <= LIMITS.max_step + 1e-9)
        last = cmd.goal


def test_joint_limits_only_narrow_the_calibrated_range() -> None:
    names = ["a", "b", "c"]
    lower, upper = joint_limits(
        names,
        np.array([-100.0, -100, 0]),
        np.array([100.0, 100, 100]),
        {"a": [-50, 200], "c": [10, 80]},
    )
    np.testing.assert_array_equal(lower, [-50, -100, 10])
    np.testing.assert_array_equal(upper, [100, 100, 80])
    with pytest.raises(ValueError, match="unknown joint"):
        joint_limits(names, np.zeros(3), np.ones(3), {"elbow": [0, 1]})
    with pytest.raises(ValueError, match="low < high"):
        joint_limits(names, np.zeros(3), np.ones(3), {"a": [1, 0]})
    with pytest.raises(ValueError, match="outside the calibrated range"):
        joint_limits(names, np.zeros(3), np.ones(3), {"a": [5, 6]})


def test_per_joint_overrides_and_limit_validation() -> None:
    np.testing.assert_array_equal(per_joint(["a", "b"], 5.0, {"b": 2.0}, "max_step"), [5, 2])
    with pytest.raises(ValueError, match="unknown joint"):
        per_joint(["a"], 5.0, {"z": 1.0}, "max_step")
    with pytest.raises(ValueError, match="lower < upper"):
        SafetyLimits(np.ones(2), np.zeros(2), np.ones(2), 0.01, 0.1, 0.5)
    with pytest.raises(ValueError, match="max_step"):
        SafetyLimits(np.zeros(2), np.ones(2), np.array([1.0, 0.0]), 0.01, 0.1, 0.5)
