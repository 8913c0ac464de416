"""Scripted SO-101 tabletop episodes (lift, sort, stack): joints, actions and camera frames.

Everything an episode contains is a pure function of (task, seed, episode_index):
the cube layout is drawn from a seeded generator, the commanded trajectory is a min-jerk
interpolation through inverse-kinematics keyframes that depend on the layout, and the measured
state follows the command through a first-order lag quantized to servo ticks. Frames are
rendered lazily from the states, so tests can check joints without rendering video.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from fake_arm import HOME, JOINTS, Arm, grip_for_width
from fake_scene import Camera, Polygon, Scene, box_faces, disc, render, shade

FPS = 30
IMAGE_HW = (480, 640)
CUBE = 0.035  # cube edge (m)
TASK_IDS = {"lift": 0, "sort": 1, "stack": 2}
TASK_TEXT = {
    "lift": "lift the cube",
    "sort": "sort the cubes by colour",
    "stack": "stack the red cube on the blue cube",
}
RED, BLUE = (200, 40, 40), (40, 70, 200)
LIFT_COLORS = [RED, (40, 160, 60), BLUE, (220, 190, 30)]
TABLE = (170, 135, 95)

FOLLOW = 0.55  # per-frame fraction of the remaining error the servo closes (state lag)
TICK_DEG = 360.0 / 4096  # STS3215 resolution
TICK_GRIP = 100.0 / 1400  # gripper range is ~1400 ticks mapped onto 0-100
GRIP_OPEN, GRIP_CLOSED = 80.0, 5.0
GRIP_ON_CUBE = grip_for_width(CUBE)  # fingers stop here while a cube is between them

_UP = np.array([0.0, 0.0, 1.0])
# The one-arm scene is smaller, so its front camera sits closer.
FRONT_CAMS = {
    "lift": Camera.look_at(np.array([0.0, -0.10, 0.48]), np.array([0.0, 0.19, 0.12]), _UP, 60.0),
    "sort": Camera.look_at(np.array([0.0, -0.12, 0.62]), np.array([0.0, 0.20, 0.11]), _UP, 60.0),
}
FRONT_CAMS["stack"] = FRONT_CAMS["sort"]
ONE_ARM = {"": Arm((0.0, 0.30), (235, 150, 40))}
TWO_ARMS = {
    "left_": Arm((-0.16, 0.30), (235, 150, 40)),
    "right_": Arm((0.16, 0.30), (230, 220, 210)),
}


def arms_for(task: str) -> dict[str, Arm]:
    """Joint-name prefix -> arm. Left arm first, as in the dataset's names."""
    return ONE_ARM if task == "lift" else TWO_ARMS


def joint_names(task: str) -> list[str]:
    return [f"{prefix}{j}.pos" for prefix in arms_for(task) for j in JOINTS]


def camera_names(task: str) -> list[str]:
    return ["front"] if task == "lift" else ["front", "left_wrist", "right_wrist"]


@dataclass
class Cube:
    xy: np.ndarray
    yaw: float
    color: tuple[int, int, int]
    z: float = CUBE / 2


@dataclass
class Grasp:
    """The arm `arm` holds cube `cube` over frames [start, end); at `end` it rests at `rest_z`."""

    arm: str
    cube: int
    close: int  # frame at which the fingers start closing on the cube (state is blocked after)
    start: int
    end: int
    rest_z: float


@dataclass
class Plan:
    task: str
    length: int
    cubes: list[Cube]
    bins: list[tuple[np.ndarray, tuple[int, int, int]]] = field(default_factory=list)
    keyframes: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    grasps: list[Grasp] = field(default_factory=list)


class Episode(NamedTuple):
    states: np.ndarray  # (T, n) float32
    actions: np.ndarray  # (T, n) float32
    frames: Iterator[dict[str, np.ndarray]]  # camera name -> uint8 (480, 640, 3), rendered lazily
    task: str


# ---------------------------------------------------------------- planning


def _pose(
    arm: Arm, target: np.ndarray, yaw: float, grip: float, pitch: float = 90.0
) -> np.ndarray | None:
    q = arm.ik(target, pitch)
    if q is None:
        return None
    return np.array([*q, arm.roll_to_align(q[0], yaw), grip])


def _sample_cubes(rng: np.random.Generator, n: int, colors: list, region: tuple) -> list[Cube]:
    (x0, x1), (y0, y1) = region
    cubes: list[Cube] = []
    while len(cubes) < n:
        xy = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
        if all(np.linalg.norm(xy - c.xy) > 0.085 for c in cubes):
            cubes.append(Cube(xy, float(rng.uniform(-45, 45)), colors[len(cubes)]))
    return cubes


def _pick_place(
    arm: Arm, cube: Cube, place_xy: np.ndarray, place_z: float, times: list[int]
) -> list[tuple[int, np.ndarray]] | None:
    """Keyframes: above cube, at cube, closed, lifted, above place, lowered, open, retreat."""
    c3 = np.array([*cube.xy, cube.z])
    p3 = np.array([*place_xy, place_z])
    up = np.array([0.0, 0.0, 0.08])
    yaw = cube.yaw
    poses = [
        _pose(arm, c3 + up, yaw, GRIP_OPEN),
        _pose(arm, c3 + [0, 0, 0.004], yaw, GRIP_OPEN),
        _pose(arm, c3 + [0, 0, 0.004], yaw, GRIP_CLOSED),
        _pose(arm, c3 + [0, 0, 0.10], yaw, GRIP_CLOSED),
        _pose(arm, p3 + up, yaw, GRIP_CLOSED),
        _pose(arm, p3 + [0, 0, 0.006], yaw, GRIP_CLOSED),
        _pose(arm, p3 + [0, 0, 0.006], yaw, GRIP_OPEN),
        _pose(arm, p3 + up, yaw, GRIP_OPEN),
    ]
    if any(p is None for p in poses):
        return None
    return [(0, HOME.copy()), *zip(times, poses, strict=True)]


def _plan_lift(rng: np.random.Generator, length: int) -> Plan | None:
    arm = ONE_ARM[""]
    r, a = rng.uniform(0.13, 0.23), np.radians(rng.uniform(-40, 40))
    xy = np.array(arm.base_xy) + r * np.array([np.sin(a), -np.cos(a)])
    color = LIFT_COLORS[int(rng.integers(len(LIFT_COLORS)))]
    cube = Cube(xy, float(rng.uniform(-45, 45)), color)
    c3 = np.array([*xy, cube.z])
    t = [round(f * length) for f in (0.30, 0.48, 0.58, 0.85)]
    poses = [
        _pose(arm, c3 + [0, 0, 0.08], cube.yaw, GRIP_OPEN),
        _pose(arm, c3 + [0, 0, 0.004], cube.yaw, GRIP_OPEN),
        _pose(arm, c3 + [0, 0, 0.004], cube.yaw, GRIP_CLOSED),
        _pose(arm, c3 + [0, 0, 0.13], cube.yaw, GRIP_CLOSED),
    ]
    if any(p is None for p in poses):
        return None
    plan = Plan("lift", length, [cube])
    plan.keyframes[""] = [(0, HOME.copy()), *zip(t, poses, strict=True)]
    plan.grasps.append(Grasp("", 0, t[1], t[2], length, cube.z))
    return plan


# Fractions of the episode at which the pick-and-place keyframes are reached.
_PICK_PLACE_T = (0.22, 0.34, 0.41, 0.50, 0.66, 0.76, 0.82, 0.93)


def _plan_sort(rng: np.random.Generator, length: int) -> Plan | None:
    cubes = _sample_cubes(rng, 2, [RED, BLUE], ((-0.12, 0.12), (0.09, 0.20)))
    bins = [(np.array([-0.33, 0.15]), RED), (np.array([0.33, 0.15]), BLUE)]
    plan = Plan("sort", length, cubes, bins)
    # The right arm starts a little later so the two arms do not mirror each other.
    for i, (prefix, lag) in enumerate((("left_", 0.0), ("right_", 0.06))):
        times = [round((f * (1 - lag) + lag) * length) for f in _PICK_PLACE_T]
        # Drop position jittered inside the bin so the release point is not a constant.
        drop = bins[i][0] + rng.uniform(-0.015, 0.015, 2)
        kf = _pick_place(TWO_ARMS[prefix], cubes[i], drop, CUBE / 2, times)
        if kf is None:
            return None
        plan.keyframes[prefix] = kf
        plan.grasps.append(Grasp(prefix, i, times[1], times[2], times[5] + 2, CUBE / 2))
    return plan


def _plan_stack(rng: np.random.Generator, length: int) -> Plan | None:
    cubes = _sample_cubes(rng, 2, [RED, BLUE], ((-0.12, 0.12), (0.09, 0.20)))
    red, blue = cubes
    plan = Plan("stack", length, cubes)
    # Left arm steadies the blue cube from the side (flat pitch), holding it to the end.
    left = TWO_ARMS["left_"]
    b3 = np.array([*blue.xy, blue.z])
    t = [round(f * length) for f in (0.25, 0.40, 0.48)]
    poses = [
        _pose(left, b3 + [0, 0, 0.07], blue.yaw, GRIP_OPEN, pitch=35.0),
        _pose(left, b3, blue.yaw, GRIP_OPEN, pitch=35.0),
        _pose(left, b3, blue.yaw, GRIP_CLOSED, pitch=35.0),
    ]
    if any(p is None for p in poses):
        return None
    plan.keyframes["left_"] = [(0, HOME.copy()), *zip(t, poses, strict=True)]
    # Holding without lifting: the grasp blocks the fingers but the cube never leaves the table.
    plan.grasps.append(Grasp("left_", 1, t[1], length, length, blue.z))
    # Right arm picks the red cube and puts it on top of the blue one.
    times = [round((f * 0.94 + 0.06) * length) for f in _PICK_PLACE_T]
    kf = _pick_place(TWO_ARMS["right_"], red, blue.xy, blue.z + CUBE, times)
    if kf is None:
        return None
    plan.keyframes["right_"] = kf
    plan.grasps.append(Grasp("right_", 0, times[1], times[2], times[5] + 2, blue.z + CUBE))
    return plan


_PLANNERS = {"lift": _plan_lift, "sort": _plan_sort, "stack": _plan_stack}


def make_plan(task: str, seed: int, episode_index: int) -> Plan:
    if task not in TASK_IDS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_IDS)}")
    rng = np.random.default_rng([seed, TASK_IDS[task], episode_index])
    length = int(rng.integers(3 * FPS, 5 * FPS + 1))  # 3-5 s
    for _ in range(100):  # rejection sampling: layouts some keyframe cannot reach are redrawn
        plan = _PLANNERS[task](rng, length)
        if plan is not None:
            return plan
    raise RuntimeError(f"no reachable layout for {task} episode {episode_index}")


# ---------------------------------------------------------------- simulation


def _min_jerk(keyframes: list[tuple[int, np.ndarray]], length: int) -> np.ndarray:
    out = np.empty((length, len(keyframes[0][1])))
    for (t0, q0), (t1, q1) in zip(keyframes, keyframes[1:], strict=False):
        s = (np.arange(t0, t1) - t0) / max(t1 - t0, 1)
        s = 10 * s**3 - 15 * s**4 + 6 * s**5
        out[t0:t1] = q0 + s[:, None] * (q1 - q0)
    t_last, q_last = keyframes[-1]
    out[t_last:] = q_last
    return out


def _quantize(q: np.ndarray) -> np.ndarray:
    ticks = np.array([TICK_DEG] * 5 + [TICK_GRIP])
    return np.round(q / ticks) * ticks


def simulate(plan: Plan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(states, actions) float32: action[t] is the command at t, state[t+1] lags toward it."""
    states, actions = [], []
    for prefix in arms_for(plan.task):
        cmd = _min_jerk(plan.keyframes[prefix], plan.length)
        grasps = [g for g in plan.grasps if g.arm == prefix]
        q = np.empty_like(cmd)
        q[0] = _quantize(HOME + np.append(rng.uniform(-2, 2, 5), 0.0))
        for t in range(1, plan.length):
            nxt = q[t - 1] + FOLLOW * (cmd[t - 1] - q[t - 1])
            if any(g.close <= t < g.end for g in grasps):
                nxt[5] = max(nxt[5], GRIP_ON_CUBE)  # the cube stops the fingers
            q[t] = _quantize(nxt)
        states.append(q)
        actions.append(cmd)
    return (
        np.concatenate(states, axis=1).astype(np.float32),
        np.concatenate(actions, axis=1).astype(np.float32),
    )


def cube_track(plan: Plan, states: np.ndarray) -> list[list[tuple[np.ndarray, float]]]:
    """Per frame, per cube: (centre xyz, yaw). A held cube rides with the fingertips."""
    arms = arms_for(plan.task)
    cols = {p: slice(6 * i, 6 * i + 6) for i, p in enumerate(arms)}
    track = [[(np.array([*c.xy, c.z]), c.yaw) for c in plan.cubes]]
    anchors: dict[int, tuple[np.ndarray, float, np.ndarray, float]] = {}
    for t in range(1, plan.length):
        frame = list(track[-1])
        for gi, g in enumerate(plan.grasps):
            q = states[t, cols[g.arm]].astype(np.float64)
            if g.start <= t < g.end:
                tip = arms[g.arm].fk(q).tip
                if gi not in anchors:
                    anchors[gi] = (*frame[g.cube], tip, float(q[0]))
                pos0, yaw0, tip0, pan0 = anchors[gi]
                # Panning turns the gripper (and the cube in it) about the vertical.
                frame[g.cube] = (pos0 + (tip - tip0), yaw0 + float(q[0]) - pan0)
            elif t == g.end:
                pos, yaw = frame[g.cube]
                frame[g.cube] = (np.array([pos[0], pos[1], g.rest_z]), yaw)
        track.append(frame)
    return track


# ---------------------------------------------------------------- rendering


def _table() -> list[Polygon]:
    top = np.array([[-0.55, -0.20, 0], [0.55, -0.20, 0], [0.55, 0.50, 0], [-0.55, 0.50, 0]])
    edge = np.array(
        [[-0.55, -0.20, 0], [0.55, -0.20, 0], [0.55, -0.20, -0.04], [-0.55, -0.20, -0.04]]
    )
    return [Polygon(edge, shade(TABLE, 0.7)), Polygon(top, TABLE)]


def _scene(plan: Plan, q: np.ndarray, cubes: list[tuple[np.ndarray, float]]) -> Scene:
    scene = Scene(ground=_table())
    square = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float)
    for xy, color in plan.bins:  # a dark rim around the coloured floor of the bin
        scene.ground.append(
            Polygon(np.c_[xy + 0.05 * square, np.full(4, 0.0005)], shade(color, 0.45))
        )
        scene.ground.append(
            Polygon(np.c_[xy + 0.04 * square, np.full(4, 0.001)], shade(color, 0.9))
        )
    arms = arms_for(plan.task)
    for i, (prefix, arm) in enumerate(arms.items()):
        qa = q[6 * i : 6 * i + 6]
        # A soft shadow under the gripper gives the front view a height cue.
        tip = arm.fk(qa).tip
        scene.ground.append(disc(np.array([tip[0], tip[1], 0.0012]), 0.018, shade(TABLE, 0.78)))
        scene.items.extend(arm.items(qa, hand_tag=f"{prefix}hand"))
    for (pos, yaw), cube in zip(cubes, plan.cubes, strict=True):
        if pos[2] > CUBE:
            scene.ground.append(disc(np.array([pos[0], pos[1], 0.0012]), 0.022, shade(TABLE, 0.75)))
        scene.items.extend(box_faces(pos, (CUBE, CUBE, CUBE), yaw, cube.color))
    return scene


def wrist_camera(arm: Arm, q: np.ndarray) -> Camera:
    """Camera on top of the gripper, looking past the fingertips."""
    p = arm.fk(q)
    eye = p.wrist + 0.035 * p.normal - 0.01 * p.axis
    return Camera.look_at(eye, p.tip + 0.12 * p.axis, p.normal, hfov_deg=95.0)


def render_frames(plan: Plan, states: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    track = cube_track(plan, states)
    arms = list(arms_for(plan.task).values())
    for t in range(plan.length):
        scene = _scene(plan, states[t].astype(np.float64), track[t])
        frames = {"front": render(scene, FRONT_CAMS[plan.task])}
        if len(arms) == 2:
            for name, i in (("left_wrist", 0), ("right_wrist", 1)):
                cam = wrist_camera(arms[i], states[t, 6 * i : 6 * i + 6].astype(np.float64))
                frames[name] = render(scene, cam, hide=f"{name.split('_')[0]}_hand")
        yield frames


def episode_arrays(task: str, seed: int, episode_index: int) -> Episode:
    """One episode: states and actions (T, n) float32, a lazy frame generator, the task text."""
    plan = make_plan(task, seed, episode_index)
    rng = np.random.default_rng([seed, TASK_IDS[task], episode_index, 1])
    states, actions = simulate(plan, rng)
    return Episode(states, actions, render_frames(plan, states), TASK_TEXT[task])
