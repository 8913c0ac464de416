"""Goal safety for one arm: the last line of defence between commanded goals and the servos.

Pure logic with no I/O and no clock of its own (every call takes `now`), so it is unit-tested
directly and the servo process only feeds it. What it guarantees for every command it returns:
finite, inside the joint limits (or the present position when holding), and never more than
`max_step` per control tick away from the previous command.

Life of a goal: `offer()` validates it (length, NaN, age, e-stop) and clamps it to the joint
limits; `command()`, called every tick and whenever a goal arrives, moves the commanded position
toward the newest goal at most `max_step` per tick. With no fresh goal for `watchdog_s` the arm
holds where it is; an e-stop holds it until `clear_estop()` and a fresh goal after that. Leaving
a hold, the step limit starts at `resume_scale` of itself and ramps up over `resume_ramp_s`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

REJECT_REASONS = ("length", "nan", "stale", "estop")

WAITING_FOR_FIRST_GOAL = "waiting for the first goal"
WAITING_AFTER_ESTOP = "e-stop cleared; waiting for a fresh goal"
RESUMED = "goals resumed"


@dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # per joint, lerobot units
    upper: np.ndarray
    max_step: np.ndarray  # largest change of the commanded goal per control tick, per joint
    period_s: float  # the control tick
    max_goal_age_s: float  # goals older than this (t_exec / t_cap vs now) are stale
    watchdog_s: float  # no fresh goal for this long: hold
    # After a hold, the step limit starts at this fraction of max_step and ramps up to the full
    # step over resume_ramp_s: the arm eases back into following goals instead of lunging.
    resume_scale: float = 0.2
    resume_ramp_s: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.lower)
        for name in ("upper", "max_step"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} joints, lower has {n}")
        if not np.all(np.asarray(self.lower) < np.asarray(self.upper)):
            raise ValueError(f"joint limits need lower < upper: {self.lower} / {self.upper}")
        if not np.all(np.asarray(self.max_step) > 0):
            raise ValueError(f"max_step must be > 0 for every joint: {self.max_step}")
        for name in ("period_s", "max_goal_age_s", "watchdog_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 < self.resume_scale <= 1:
            raise ValueError(f"resume_scale must be in (0, 1], got {self.resume_scale}")
        if self.resume_ramp_s < 0:
            raise ValueError(f"resume_ramp_s must be >= 0, got {self.resume_ramp_s}")

    @property
    def n(self) -> int:
        return len(self.lower)


def per_joint(
    names: Sequence[str], default: float, overrides: Mapping[str, float], what: str
) -> np.ndarray:
    """A per-joint array: `default` everywhere except the joints named in `overrides`."""
    unknown = set(overrides) - set(names)
    if unknown:
        raise ValueError(f"{what}: unknown joint(s) {sorted(unknown)}; joints are {list(names)}")
    return np.array([float(overrides.get(n, default)) for n in names])


def joint_limits(
    names: Sequence[str],
    calibrated_lower: np.ndarray,
    calibrated_upper: np.ndarray,
    overrides: Mapping[str, Sequence[float]],
) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated range narrowed by configured `{joint: [low, high]}` limits.

    A configured limit can only narrow the range: the calibrated range is what the hardware can
    do, so a wider setting is cut back to it rather than trusted.
    """
    unknown = set(overrides) - set(names)
    if unknown:
        raise ValueError(f"limits: unknown joint(s) {sorted(unknown)}; joints are {list(names)}")
    lower = np.array(calibrated_lower, dtype=np.float64)
    upper = np.array(calibrated_upper, dtype=np.float64)
    for i, name in enumerate(names):
        if name not in overrides:
            continue
        pair = list(overrides[name])
        if len(pair) != 2 or not pair[0] < pair[1]:
            raise ValueError(f"limits.{name}: expected [low, high] with low < high, got {pair}")
        lower[i] = max(lower[i], float(pair[0]))
        upper[i] = min(upper[i], float(pair[1]))
        if not lower[i] < upper[i]:
            raise ValueError(
                f"limits.{name} {pair} lies outside the calibrated range "
                f"[{calibrated_lower[i]:.1f}, {calibrated_upper[i]:.1f}]"
            )
    return lower, upper


@dataclass(frozen=True)
class Command:
    goal: np.ndarray  # what to write to the servos, float64 (n,)
    holding: bool
    reason: str  # why holding, or RESUMED while tracking goals


class GoalGuard:
    """Safety state for one arm. Starts holding (no goal yet)."""

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self._goal: np.ndarray | None = None  # newest accepted goal, clamped to the limits
        self._goal_t = 0.0
        self._last_cmd: np.ndarray | None = None
        self._last_cmd_t = 0.0
        self._hold_target: np.ndarray | None = None
        self._holding = True
        self._reason = WAITING_FOR_FIRST_GOAL
        self._resumed_t: float | None = None  # when goals resumed after a hold
        self._estop = False
        self.accepted = 0
        self.applied = 0  # commands that followed a goal (not holds)
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.clamped_range = 0  # goals outside the joint limits
        self.clamped_step = 0  # commands cut short by the step limit

    @property
    def holding(self) -> bool:
        return self._holding

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def estop(self) -> bool:
        return self._estop

    def offer(self, goal: np.ndarray, age_s: float, now: float) -> str | None:
        """Take a commanded goal; returns None when accepted, else the rejection reason."""
        goal = np.asarray(goal, dtype=np.float64)
        reason = None
        if goal.shape != (self.limits.n,):
            reason = "length"
        elif not np.isfinite(goal).all():
            reason = "nan"
        elif age_s > self.limits.max_goal_age_s:
            reason = "stale"
        elif self._estop:
            reason = "estop"
        if reason is not None:
            self.rejected[reason] += 1
            return reason
        clamped = np.clip(goal, self.limits.lower, self.limits.upper)
        if not np.array_equal(clamped, goal):
            self.clamped_range += 1
        self._goal, self._goal_t = clamped, now
        self.accepted += 1
        return None

    def engage_estop(self, present: np.ndarray | None, reason: str) -> None:
        """Stop where the arm is now (None: unknown, hold the last command), and stay there
        until `clear_estop()`."""
        self._estop = True
        self._enter_hold(present, f"e-stop: {reason}" if reason else "e-stop")

    def clear_estop(self) -> None:
        if self._estop:
            self._estop = False
            self._reason = WAITING_AFTER_ESTOP

    def reanchor(self, present: np.ndarray | None, reason: str) -> None:
        """Forget the commanded position and hold at `present` (after the arm was reconnected,
        it may have moved while it was not commanded)."""
        self._last_cmd = None
        self._enter_hold(present, reason)

    def command(self, present: np.ndarray, now: float) -> Command:
        """What to write to the servos now, given their present position."""
        present = np.asarray(present, dtype=np.float64)
        if self._last_cmd is None:
            anchor = self._anchor(present)
            if anchor is None:
                raise ValueError(f"no valid position to start from: present = {present}")
            self._last_cmd, self._last_cmd_t = anchor, now
        if self._hold_target is None:
            self._hold_target = self._last_cmd.copy()
        if not self._estop and self._goal is not None:
            if now - self._goal_t <= self.limits.watchdog_s:
                return self._track(now)
            self._enter_hold(present, f"no fresh goal for {self.limits.watchdog_s:g} s (watchdog)")
        self._last_cmd, self._last_cmd_t = self._hold_target.copy(), now
        return Command(self._hold_target.copy(), True, self._reason)

    def _anchor(self, present: np.ndarray | None) -> np.ndarray | None:
        """A position to hold: the present one unless it is unknown or garbage, else the last
        command; None when neither is known (then the next `command()` anchors on its present,
        never on a made-up position)."""
        if present is not None:
            present = np.asarray(present, dtype=np.float64)
            if present.shape == (self.limits.n,) and np.isfinite(present).all():
                return present.copy()
        return None if self._last_cmd is None else self._last_cmd.copy()

    def _enter_hold(self, present: np.ndarray | None, reason: str) -> None:
        self._hold_target = self._anchor(present)
        self._holding, self._reason = True, reason
        self._goal = None
        self._resumed_t = None

    def _track(self, now: float) -> Command:
        lim = self.limits
        if self._holding:
            self._holding, self._reason, self._resumed_t = False, RESUMED, now
        # The step allowance grows with the time since the last command, up to one tick: the
        # limit is a speed (max_step per tick) however often commands are computed.
        fraction = min(max(now - self._last_cmd_t, 0.0), lim.period_s) / lim.period_s
        step = lim.max_step * fraction * self._resume_scale(now)
        delta = self._goal - self._last_cmd
        if np.any(np.abs(delta) > lim.max_step):
            self.clamped_step += 1
        cmd = self._last_cmd + np.clip(delta, -step, step)
        self._last_cmd, self._last_cmd_t = cmd, now
        self.applied += 1
        return Command(cmd.copy(), False, self._reason)

    def _resume_scale(self, now: float) -> float:
        lim = self.limits
        if self._resumed_t is None:
            return 1.0
        ramp = (now - self._resumed_t) / lim.resume_ramp_s if lim.resume_ramp_s else 1.0
        if ramp >= 1.0:
            self._resumed_t = None
            return 1.0
        return lim.resume_scale + (1.0 - lim.resume_scale) * max(ramp, 0.0)

    def counters(self) -> dict:
        return {
            "goals_accepted": self.accepted,
            "goals_applied": self.applied,
            "goals_rejected": dict(self.rejected),
            "goals_stale": self.rejected["stale"],
            "goals_clamped_range": self.clamped_range,
            "commands_step_limited": self.clamped_step,
            "holding": self._holding,
            "hold_reason": self._reason if self._holding else None,
            "estop": self._estop,
        }
