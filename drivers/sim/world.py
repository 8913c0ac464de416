"""The simulated world: MuJoCo physics of a task's scene, in lerobot's units at its edges.

Positions and goals are per arm, float (6,) in JOINTS order and lerobot units: degrees for the
body joints (0 = middle of the joint's range, as the MJCF's "new calibration" and lerobot's
degrees mode both define it), 0-100 for the gripper (0 = closed, the joint's lower limit).
Goals drive the MJCF's position actuators (kp 17.8, force limit 3.35 N m: the STS3215 values the
model ships with). Time is the physics clock: `advance(dt)` steps it; the caller keeps real time.

Episodes: `reset(seed)` places the cubes from the seed (deterministic: the same seed gives the
same scene, to the bit) and the arms at their start pose; `judge()` says when the task
succeeded or failed (README: success criteria).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import mujoco
import numpy as np

from drivers.servo.base import JOINTS
from drivers.sim import scene as scenes

# The arms' start pose (lerobot units): gripper above the table, half open.
START_POSE = np.array([0.0, -45.0, 35.0, 75.0, 0.0, 30.0])
LIFT_HEIGHT = 0.05  # lift: cube bottom this far above the table ...
HOLD_S = 1.0  # ... for this long (stack: red on blue at rest for this long)
REST_SPEED = 0.02  # m/s: a cube slower than this is at rest
OFF_TABLE = 0.55  # |x| or |y| beyond this (or below the table): the cube fell off


@dataclass
class Outcome:
    success: bool
    reason: str
    time_s: float  # simulated seconds since the reset


@dataclass
class EpisodeInit:
    """Everything needed to replay an episode exactly: the seed determines the rest."""

    seed: int
    cubes: dict[str, list[float]]  # name -> [x, y, z, qw, qx, qy, qz]
    arms: dict[str, list[float]] = field(default_factory=dict)  # start pose, lerobot units


class ArmJoints:
    """Index bookkeeping and unit conversion for one arm in the model."""

    def __init__(self, model: mujoco.MjModel, arm: str):
        self.name = arm
        self.qpos = np.array([model.joint(f"{arm}/{j}").qposadr[0] for j in JOINTS])
        self.dof = np.array([model.joint(f"{arm}/{j}").dofadr[0] for j in JOINTS])
        self.act = np.array([model.actuator(f"{arm}/{j}").id for j in JOINTS])
        self.lo = model.jnt_range[[model.joint(f"{arm}/{j}").id for j in JOINTS], 0].copy()
        self.hi = model.jnt_range[[model.joint(f"{arm}/{j}").id for j in JOINTS], 1].copy()
        self.gain = model.actuator_gainprm[self.act, 0].copy()
        self.bias = model.actuator_biasprm[self.act, :3].copy()
        self.geoms = {
            g
            for g in range(model.ngeom)
            if model.body(model.geom_bodyid[g]).name.startswith(f"{arm}/")
        }

    def to_units(self, q: np.ndarray) -> np.ndarray:
        out = np.degrees(q)
        out[-1] = (q[-1] - self.lo[-1]) / (self.hi[-1] - self.lo[-1]) * 100.0
        return out

    def to_radians(self, units: np.ndarray) -> np.ndarray:
        out = np.radians(np.asarray(units, dtype=np.float64))
        out[-1] = self.lo[-1] + np.asarray(units[-1]) / 100.0 * (self.hi[-1] - self.lo[-1])
        return out

    def unit_range(self) -> tuple[np.ndarray, np.ndarray]:
        lower, upper = np.degrees(self.lo), np.degrees(self.hi)
        lower[-1], upper[-1] = 0.0, 100.0
        return lower, upper


class SimWorld:
    """One scene's model and state. Thread-safe: physics, the bus and the renderer share it."""

    def __init__(self, task: str, arm_mjcf=scenes.ARM_MJCF):
        self.scene = scenes.scene_spec(task)
        self.model = scenes.build_model(task, arm_mjcf)
        self.data = mujoco.MjData(self.model)
        self.lock = threading.Lock()
        self.arms = {arm: ArmJoints(self.model, arm) for arm in self.scene.arms}
        self.cube_qpos = {c: self.model.joint(c).qposadr[0] for c in self.scene.cubes}
        self.cube_body = {c: self.model.body(c).id for c in self.scene.cubes}
        self.cube_geom = {c: self.model.geom(c).id for c in self.scene.cubes}
        self._torque = dict.fromkeys(self.arms, True)
        self._since: float | None = None  # when the success condition began to hold
        self.init: EpisodeInit | None = None
        self.resets = 0  # the physics clock starts again at 0 with each
        self.reset(0)

    # -- arms --------------------------------------------------------------------------------
    def positions(self, arm: str) -> np.ndarray:
        j = self.arms[arm]
        with self.lock:
            return j.to_units(self.data.qpos[j.qpos]).astype(np.float32)

    def set_goal(self, arm: str, goal: np.ndarray) -> None:
        """Goals are clamped to the joint ranges here too: the actuators never see NaN or a
        value beyond the model (core.safety has checked them already)."""
        j = self.arms[arm]
        q = j.to_radians(goal)
        if not np.isfinite(q).all():
            raise ValueError(f"{arm}: goal is not finite: {goal}")
        with self.lock:
            self.data.ctrl[j.act] = np.clip(q, j.lo, j.hi)

    def set_torque(self, arm: str, enabled: bool) -> None:
        """Torque off: the actuators exert nothing (the arm falls under gravity, like a
        real SO-101 whose torque is disabled)."""
        j = self.arms[arm]
        with self.lock:
            self.model.actuator_gainprm[j.act, 0] = j.gain if enabled else 0.0
            self.model.actuator_biasprm[j.act, :3] = j.bias if enabled else 0.0
            self._torque[arm] = enabled

    # -- time --------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    def advance(self, seconds: float) -> int:
        """Step the physics by whole timesteps covering `seconds`; returns the steps taken."""
        steps = int(round(seconds / self.model.opt.timestep))
        with self.lock:
            for _ in range(steps):
                mujoco.mj_step(self.model, self.data)
        return steps

    def snapshot(self, into: mujoco.MjData) -> float:
        """Copy the state the renderer needs into `into` (its own MjData); returns sim time."""
        with self.lock:
            into.qpos[:] = self.data.qpos
            into.time = self.data.time
        mujoco.mj_kinematics(self.model, into)
        mujoco.mj_camlight(self.model, into)
        return float(into.time)

    # -- episodes ----------------------------------------------------------------------------
    def reset(self, seed: int) -> EpisodeInit:
        rng = np.random.default_rng(seed)
        cubes = place_cubes(self.scene.task, rng)
        with self.lock:
            mujoco.mj_resetData(self.model, self.data)
            for j in self.arms.values():
                q = j.to_radians(START_POSE)
                self.data.qpos[j.qpos] = q
                self.data.ctrl[j.act] = q
            for name, pose in cubes.items():
                adr = self.cube_qpos[name]
                self.data.qpos[adr : adr + 7] = pose
            mujoco.mj_forward(self.model, self.data)
        self._since = None
        self.resets += 1
        self.init = EpisodeInit(
            seed,
            {k: np.round(v, 6).tolist() for k, v in cubes.items()},
            {a: START_POSE.tolist() for a in self.arms},
        )
        return self.init

    def cube_position(self, name: str) -> np.ndarray:
        with self.lock:
            return self.data.xpos[self.cube_body[name]].copy()

    def cube_speed(self, name: str) -> float:
        adr = self.model.joint(name).dofadr[0]
        with self.lock:
            return float(np.linalg.norm(self.data.qvel[adr : adr + 3]))

    def touching_arm(self, cube: str) -> bool:
        """Is any arm geom in contact with the cube (is it still held or pushed)?"""
        g = self.cube_geom[cube]
        arm_geoms = set().union(*(j.geoms for j in self.arms.values()))
        with self.lock:
            for c in self.data.contact[: self.data.ncon]:
                if (c.geom1 == g and c.geom2 in arm_geoms) or (
                    c.geom2 == g and c.geom1 in arm_geoms
                ):
                    return True
        return False

    def judge(self) -> Outcome | None:
        """Success, failure (a cube off the table), or None while the episode goes on.
        Call after each advance(); timeouts are the caller's (it knows the episode length)."""
        t = self.time
        for cube in self.scene.cubes:
            p = self.cube_position(cube)
            if abs(p[0]) > OFF_TABLE or abs(p[1]) > OFF_TABLE or p[2] < -0.02:
                return Outcome(False, f"the {cube} cube fell off the table", t)
        if self._condition():
            if self._since is None:
                self._since = t
            held = t - self._since
            needed = 0.0 if self.scene.task == "sort" else HOLD_S
            if held >= needed:
                return Outcome(True, SUCCESS_TEXT[self.scene.task], t)
        else:
            self._since = None
        return None

    def where(self) -> str:
        """Where the cubes are, for a failure's reason: "red in its bin, blue at (x, y, z) m,
        moved 4.2 cm". How far each moved from its start tells a grasp never tried (0 cm) from
        one that pushed the cube (a few cm) or a cube carried and set down wrong."""
        parts = []
        for cube in self.scene.cubes:
            if self.scene.task == "sort" and self._in_bin(cube):
                parts.append(f"{cube} in its bin")
                continue
            p = self.cube_position(cube)
            start = np.asarray(self.init.cubes[cube][:3])  # reset() in __init__ set it
            text = f"{cube} at ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m"
            text += f", moved {100 * np.linalg.norm(p - start):.1f} cm"
            if self.touching_arm(cube):
                text += ", touching an arm"
            parts.append(text)
        return ", ".join(parts)

    def _condition(self) -> bool:
        task = self.scene.task
        if task == "lift":
            return self.cube_position("red")[2] - scenes.CUBE_HALF >= LIFT_HEIGHT
        if task == "sort":
            return all(self._in_bin(c) for c in ("red", "blue"))
        red, blue = self.cube_position("red"), self.cube_position("blue")
        on_top = (
            np.linalg.norm(red[:2] - blue[:2]) < scenes.CUBE_HALF
            and abs(red[2] - blue[2] - 2 * scenes.CUBE_HALF) < 0.006
        )
        return (
            on_top
            and self.cube_speed("red") < REST_SPEED
            and self.cube_speed("blue") < REST_SPEED
            and not self.touching_arm("red")
        )

    def _in_bin(self, cube: str) -> bool:
        p = self.cube_position(cube)
        cx, cy = scenes.BIN_CENTRES[cube]
        inside = (
            abs(p[0] - cx) < scenes.BIN_HALF
            and abs(p[1] - cy) < scenes.BIN_HALF
            and p[2] < 2 * scenes.BIN_WALL_HALF_H
        )
        return inside and self.cube_speed(cube) < REST_SPEED and not self.touching_arm(cube)


SUCCESS_TEXT = {
    "lift": f"cube held {LIFT_HEIGHT * 100:.0f} cm above the table for {HOLD_S:g} s",
    "sort": "each cube at rest in its own bin",
    "stack": f"red cube at rest on the blue one for {HOLD_S:g} s",
}


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def place_cubes(task: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Initial cube poses [x, y, z, qw, qx, qy, qz] for a task, drawn from `rng`."""
    z = scenes.CUBE_HALF

    def pose(x: float, y: float) -> np.ndarray:
        return np.array([x, y, z, *_yaw_quat(rng.uniform(-0.35, 0.35))])

    if task == "lift":
        return {"red": pose(rng.uniform(0.17, 0.25), rng.uniform(-0.07, 0.07))}
    left, right = scenes.ARM_BASES["left_arm"][1], scenes.ARM_BASES["right_arm"][1]
    if task == "sort":
        red_left = rng.random() < 0.5
        spots = [
            (rng.uniform(0.16, 0.22), side + rng.uniform(-0.04, 0.04)) for side in (left, right)
        ]
        red, blue = spots if red_left else spots[::-1]
        return {"red": pose(*red), "blue": pose(*blue)}
    side = left if rng.random() < 0.5 else right
    return {
        "red": pose(rng.uniform(0.16, 0.22), side + rng.uniform(-0.04, 0.04)),
        "blue": pose(rng.uniform(0.15, 0.2), rng.uniform(-0.03, 0.03)),
    }
