"""The scripted expert: a whole episode's joint trajectory, planned from the initial cube poses.

Waypoints for the grasp point (above the cube, down to it, close, up, over the goal, down,
open, up, back), each solved by `TopDownIK`, joined by straight lines sampled at the control
rate (so descents go straight down), with a gravity feed-forward on every goal. Two-arm tasks
run one arm after the other (the arms share the middle of the table). The plan is a function of
the scene's initial state alone, so the same seed gives the same demonstration.

    plan = plan_episode("stack", init.cubes, fps=30)
    plan.goals_at(t)   # {arm: (6,) goal in lerobot units} at t seconds after the reset
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.sim import scene as scenes
from drivers.sim.ik import TopDownIK
from drivers.sim.world import START_POSE

OPEN, CLOSED = 55.0, 0.0  # gripper, lerobot units (0 = closed: it squeezes the cube)
HOVER = 0.06  # above the cube top before descending
CARRY_Z = 0.10  # grasp point height while carrying
FREE_SPEED = 0.25  # m/s of the grasp point in free space
CAREFUL_SPEED = 0.08  # m/s next to the cube
GRIP_S = 0.5  # time for the gripper to close or open


@dataclass
class Segment:
    end: np.ndarray  # grasp point target
    gripper: float
    speed: float  # m/s along the straight line; 0: stay (gripper moves) for `dwell` s
    dwell: float = 0.0


def _yaw(quat: list[float]) -> float:
    w, _, _, z = quat
    return 2.0 * np.arctan2(z, w)


def _jaw_axis(cube_quat: list[float], cube_xy: np.ndarray, base_xy: np.ndarray) -> np.ndarray:
    """The cube face normal closest to the arm's radial direction (roll stays near zero)."""
    yaw = _yaw(cube_quat)
    radial = (cube_xy - base_xy) / np.linalg.norm(cube_xy - base_xy)
    normals = [
        np.array([np.cos(yaw + k * np.pi / 2), np.sin(yaw + k * np.pi / 2), 0.0]) for k in range(2)
    ]
    return max(normals, key=lambda n: abs(n[:2] @ radial))


class ArmPlanner:
    """Turns segments into (frames, 6) goals at `fps` for one arm."""

    def __init__(self, ik: TopDownIK, fps: float):
        self.ik = ik
        self.dt = 1.0 / fps
        self.q = ik.joints.to_radians(START_POSE)[:5]
        self.point = ik.grasp_point(self.q)
        self.gripper = START_POSE[5]
        self.frames: list[np.ndarray] = []

    def _emit(self, q: np.ndarray, gripper: float) -> None:
        j = self.ik.joints
        grip_rad = j.to_radians(np.r_[np.zeros(5), gripper])[5]
        goal = np.r_[q + self.ik.gravity_offset(q, grip_rad)[:5], grip_rad]
        self.frames.append(j.to_units(goal))

    def hold(self, seconds: float) -> None:
        for _ in range(int(round(seconds / self.dt))):
            self._emit(self.q, self.gripper)

    def run(self, segment: Segment, jaw_axis: np.ndarray) -> None:
        if segment.speed <= 0:  # the gripper moves; the arm stays
            n = max(1, int(round(segment.dwell / self.dt)))
            for i in range(1, n + 1):
                self._emit(self.q, self.gripper + (segment.gripper - self.gripper) * i / n)
            self.gripper = segment.gripper
            return
        distance = float(np.linalg.norm(segment.end - self.point))
        n = max(1, int(np.ceil(distance / (segment.speed * self.dt))))
        start = self.point
        for i in range(1, n + 1):
            target = start + (segment.end - start) * i / n
            self.q, _ = self.ik.solve(target, jaw_axis, self.q)
            self._emit(self.q, segment.gripper)
        self.point = self.ik.grasp_point(self.q)
        self.gripper = segment.gripper

    def go_home(self) -> None:
        home = self.ik.joints.to_radians(START_POSE)[:5]
        n = max(1, int(np.ceil(np.max(np.abs(home - self.q)) / (np.radians(90) * self.dt))))
        start = self.q
        for i in range(1, n + 1):
            self.q = start + (home - start) * i / n
            self._emit(self.q, self.gripper)
        self.point = self.ik.grasp_point(self.q)


def pick_and_place(
    cube_pos: np.ndarray, cube_quat: list[float], place: np.ndarray | None, base_xy: np.ndarray
) -> tuple[list[Segment], np.ndarray]:
    """Segments to grasp a cube and lift it (place None) or set it down at `place`."""
    top = cube_pos[2] + scenes.CUBE_HALF
    grasp = np.array([cube_pos[0], cube_pos[1], cube_pos[2] + 0.004])
    above = np.array([grasp[0], grasp[1], top + HOVER])
    segments = [
        Segment(above, OPEN, FREE_SPEED),
        Segment(grasp, OPEN, CAREFUL_SPEED),
        Segment(grasp, CLOSED, 0.0, GRIP_S),
        Segment(np.array([grasp[0], grasp[1], CARRY_Z]), CLOSED, CAREFUL_SPEED),
    ]
    if place is not None:
        over = np.array([place[0], place[1], CARRY_Z])
        segments += [
            Segment(over, CLOSED, FREE_SPEED),
            Segment(place, CLOSED, CAREFUL_SPEED),
            Segment(place, OPEN, 0.0, GRIP_S),
            Segment(np.array([place[0], place[1], CARRY_Z]), OPEN, CAREFUL_SPEED),
        ]
    return segments, _jaw_axis(cube_quat, cube_pos[:2], base_xy)


@dataclass
class ExpertPlan:
    fps: float
    goals: dict[str, np.ndarray]  # arm -> (frames, 6), lerobot units

    @property
    def duration_s(self) -> float:
        return max(len(g) for g in self.goals.values()) / self.fps

    def goals_at(self, t: float) -> dict[str, np.ndarray]:
        """Goals at `t` s after the reset (the last one once the plan is over)."""
        return {
            arm: g[int(np.clip(round(t * self.fps), 0, len(g) - 1))]
            for arm, g in self.goals.items()
        }


class PlanFollower:
    """The plan's clock, held back while the arms lag behind it.

    A plan indexed by wall time alone runs away from an arm that held still for a while (the
    control loop waiting for a late camera frame, a watchdog hold): the cube is then grasped at
    the wrong moment. Each observation is matched against the recent stretch of the plan (body
    joints only: a closed gripper stays open by the cube's width); when the arm is more than
    `lag_frames` behind, the clock is set back to where the arm is."""

    def __init__(
        self,
        plan: ExpertPlan,
        t_start: float,
        window: int = 60,
        lag_frames: int = 12,
        max_offset_s: float = 4.0,
    ):
        self.plan, self.t_start = plan, t_start
        self.window, self.lag_frames = window, lag_frames
        # Beyond this much holding back, the plan runs on by the clock again: an arm that
        # never catches up (seen once in 50 two-arm episodes) must not stall the plan forever.
        self.max_offset_s = max_offset_s
        self.offset = 0.0  # seconds the plan runs behind the wall clock
        self.setbacks = 0

    def plan_time(self, t: float) -> float:
        return t - self.t_start - self.offset

    def observe(self, t_obs: float, state: dict[str, np.ndarray]) -> None:
        plan = self.plan
        now = int(round(self.plan_time(t_obs) * plan.fps))
        last = min(len(g) for g in plan.goals.values()) - 1
        hi = min(now, last)
        lo = max(0, hi - self.window)
        if hi - lo < self.lag_frames:
            return
        gap = np.zeros(hi - lo + 1)
        for arm, goals in plan.goals.items():
            diff = np.abs(goals[lo : hi + 1, :5] - np.asarray(state[arm])[:5])
            gap = np.maximum(gap, diff.max(axis=1))
        # Where the plan holds still (the gripper closing) every frame matches: take the latest.
        at = lo + int(np.flatnonzero(gap <= gap.min() + 1.0).max())
        # Lag is measured against the plan's last frame once the plan is over: arms resting at
        # the end are not behind it, however long ago it ended.
        if hi - at > self.lag_frames and self.offset < self.max_offset_s:
            step = (now - at - self.lag_frames // 2) / plan.fps
            self.offset = min(self.offset + step, self.max_offset_s)
            self.setbacks += 1


def plan_episode(
    task: str, cubes: dict[str, list[float]], fps: float = 30.0, model=None
) -> ExpertPlan:
    """The expert's trajectory for a scene's initial cube poses (EpisodeInit.cubes)."""
    spec = scenes.scene_spec(task)
    model = model if model is not None else scenes.build_model(task)
    planners = {arm: ArmPlanner(TopDownIK(model, arm), fps) for arm in spec.arms}
    pos = {c: np.array(p[:3]) for c, p in cubes.items()}
    quat = {c: p[3:] for c, p in cubes.items()}

    def side_of(cube: str) -> str:
        if len(spec.arms) == 1:
            return spec.arms[0]
        return "left_arm" if pos[cube][1] > 0 else "right_arm"

    jobs: list[tuple[str, str, np.ndarray | None]] = []  # (arm, cube, place)
    if task == "lift":
        jobs.append(("arm", "red", None))
    elif task == "sort":
        for cube in ("red", "blue"):
            cx, cy = scenes.BIN_CENTRES[cube]
            jobs.append((side_of(cube), cube, np.array([cx, cy, 0.035])))
        jobs.sort(key=lambda job: job[0] != "left_arm")  # left first
    else:
        blue = pos["blue"]
        jobs.append(
            (
                side_of("red"),
                "red",
                np.array([blue[0], blue[1], blue[2] + 2 * scenes.CUBE_HALF + 0.006]),
            )
        )

    for arm, cube, place in jobs:
        planner = planners[arm]
        base_xy = planner.ik.base_pos[:2]
        # The other arm waits where it is while this one works.
        start = len(planner.frames)
        others_end = max(len(p.frames) for p in planners.values())
        planner.hold((others_end - start) / fps)
        segments, jaw = pick_and_place(pos[cube], quat[cube], place, base_xy)
        for segment in segments:
            planner.run(segment, jaw)
        if place is not None:
            planner.go_home()
    end = max(len(p.frames) for p in planners.values()) + int(fps)
    for planner in planners.values():
        planner.hold((end - len(planner.frames)) / fps)
    return ExpertPlan(
        fps, {arm: np.array(p.frames, dtype=np.float32) for arm, p in planners.items()}
    )
