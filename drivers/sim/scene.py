"""The simulator's scenes, built in code from the SO-101 MJCF: table, arms, cubes, bins, cameras.

One arm spec is loaded per arm (MuJoCo refuses to attach the same spec twice) and attached
under a prefix: `arm/`, or `left_arm/` and `right_arm/`. The table top is z = 0; arms face +x.

    lift   one arm `arm`, camera `front`, one red cube.
    sort   `left_arm` (+y) and `right_arm` (-y), cameras `front`, `left_wrist`, `right_wrist`;
           a red and a blue cube, one in front of each arm (which colour where: per seed);
           a red bin and a blue bin between the arms, one behind the other.
    stack  the same arms and cameras; the blue cube in the middle, the red cube in front of one
           arm (which: per seed); the red one must end on the blue one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
ARM_MJCF = ASSETS / "so101_new_calib.xml"

CUBE_HALF = 0.015  # 3 cm cubes
CUBE_MASS = 0.03
BIN_HALF = 0.04  # inner half-width of a bin
BIN_WALL_HALF_H = 0.015  # walls 3 cm high
ARM_Y = 0.16  # two arms: bases at y = +-ARM_Y
RED = (0.85, 0.15, 0.12, 1.0)
BLUE = (0.15, 0.3, 0.85, 1.0)

# Camera settings: 480x640 everywhere by default (what a USB camera on the real robot gives).
DEFAULT_SIZE = (480, 640)


@dataclass(frozen=True)
class SceneSpec:
    """What a scene holds; every name is what the bus uses."""

    task: str
    arms: tuple[str, ...]
    cameras: tuple[str, ...]
    cubes: tuple[str, ...]  # body names, also their colours
    bins: tuple[str, ...]


SCENES = {
    "lift": SceneSpec("lift", ("arm",), ("front",), ("red",), ()),
    "sort": SceneSpec(
        "sort",
        ("left_arm", "right_arm"),
        ("front", "left_wrist", "right_wrist"),
        ("red", "blue"),
        ("red", "blue"),
    ),
    "stack": SceneSpec(
        "stack",
        ("left_arm", "right_arm"),
        ("front", "left_wrist", "right_wrist"),
        ("red", "blue"),
        (),
    ),
}
BIN_CENTRES = {"red": (0.10, 0.0), "blue": (0.21, 0.0)}  # sort: bins on the centre line
FRONT_CAMERA = {
    1: ((0.40, 0.0, 0.28), (0.17, 0.0, 0.04)),  # arms -> (position, looks at)
    2: ((0.58, 0.0, 0.42), (0.12, 0.0, 0.0)),
}
ARM_BASES = {"arm": (0.0, 0.0), "left_arm": (0.0, ARM_Y), "right_arm": (0.0, -ARM_Y)}


class SceneError(ValueError):
    """A scene that cannot be built or loaded (the message says which file or task)."""


def scene_spec(task: str) -> SceneSpec:
    try:
        return SCENES[task]
    except KeyError:
        raise SceneError(f"unknown task {task!r}: the simulator has {', '.join(SCENES)}") from None


def _load_arm(path: Path) -> mujoco.MjSpec:
    try:
        spec = mujoco.MjSpec.from_file(str(path))
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise SceneError(f"cannot load the arm model {path}: {exc}") from None
    spec.meshdir = str(path.parent / spec.meshdir)
    _render_lighter_meshes(spec, Path(spec.meshdir) / "render")
    # The fingertip pads: MuJoCo collides the jaw meshes as convex hulls, which touch a cube at
    # one point each; the pads (inert in the MJCF) give the cube two flat faces to be held by.
    for pad in ("fixed_jaw_pad", "moving_jaw_pad"):
        geom = spec.geom(pad)
        geom.contype, geom.conaffinity = 1, 1
        geom.friction = [1.5, 0.02, 0.002]
        geom.condim = 4
    return spec


def _render_lighter_meshes(spec: mujoco.MjSpec, folder: Path) -> None:
    """The geoms only cameras see (group 2) take the meshes of `folder`, ~1/5 the triangles
    (scripts/decimate_meshes.py --render); the collision geoms keep the full ones. Software
    rendering pays per triangle: the full meshes cost the simulator most of a core at 30 fps
    with three cameras, and their detail is far below a pixel at 96x128."""
    if not folder.is_dir():
        return
    lighter: dict[str, str] = {}
    for mesh in list(spec.meshes):
        if (folder / mesh.file).is_file():
            lighter[mesh.name] = f"{mesh.name}_render"
            spec.add_mesh(name=lighter[mesh.name], file=str(folder / mesh.file))
    for geom in spec.geoms:
        if geom.group == 2 and geom.meshname in lighter:
            geom.meshname = lighter[geom.meshname]


def _add_cube(world: mujoco.MjsBody, name: str, rgba: tuple) -> None:
    body = world.add_body(name=name, pos=[0.2, 0.0, CUBE_HALF])
    body.add_freejoint(name=name)
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[CUBE_HALF] * 3,
        mass=CUBE_MASS,
        rgba=list(rgba),
        friction=[1.2, 0.02, 0.002],
        condim=4,
    )


def _add_bin(world: mujoco.MjsBody, name: str, centre: tuple[float, float], rgba: tuple) -> None:
    body = world.add_body(name=f"bin_{name}", pos=[centre[0], centre[1], 0.0])
    wall = 0.003
    h = BIN_WALL_HALF_H
    body.add_geom(
        name=f"bin_{name}_floor",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[BIN_HALF + wall, BIN_HALF + wall, 0.001],
        pos=[0, 0, 0.001],
        rgba=rgba,
    )
    for i, (dx, dy) in enumerate(((1, 0), (-1, 0), (0, 1), (0, -1))):
        size = [wall, BIN_HALF + wall, h] if dx else [BIN_HALF + wall, wall, h]
        body.add_geom(
            name=f"bin_{name}_wall{i}",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=size,
            pos=[dx * (BIN_HALF + wall), dy * (BIN_HALF + wall), h],
            rgba=rgba,
        )


def _add_wrist_camera(spec: mujoco.MjSpec, arm: str, camera: str) -> None:
    """A camera on the gripper body, looking along the jaws (like a wrist-mounted USB camera)."""
    gripper = spec.body(f"{arm}/gripper")
    # In the gripper frame the jaws point along -z; the camera sits on the back of the fixed
    # jaw's motor and looks down the jaws (its -z axis is its view direction).
    gripper.add_camera(
        name=camera,
        pos=[0.0, 0.055, -0.02],
        fovy=75.0,
        quat=_quat_looking(np.array([0.0, -0.45, -1.0]), np.array([0, 1.0, 0])),
    )


def _quat_looking(forward: np.ndarray, up: np.ndarray) -> list[float]:
    """Quaternion of a camera frame whose -z looks along `forward` with +y near `up`."""
    z = -forward / np.linalg.norm(forward)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x, y, z]).flatten())
    return quat.tolist()


def build_spec(task: str, arm_mjcf: Path = ARM_MJCF) -> mujoco.MjSpec:
    """The scene of a task as an MjSpec (compile it with `.compile()`)."""
    scene = scene_spec(task)
    spec = mujoco.MjSpec()
    spec.modelname = f"so101_{task}"
    spec.option.timestep = 0.002
    spec.option.noslip_iterations = 3
    # What the policy does not need: no shadows, no multisampling (software rendering pays per
    # pass and per sample).
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.visual.headlight.diffuse = [0.55, 0.55, 0.55]
    spec.visual.map.znear = 0.01
    world = spec.worldbody
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[0.6, 0.6, 0.01],
        rgba=[0.62, 0.6, 0.56, 1.0],
        friction=[1.0, 0.02, 0.002],
    )
    world.add_light(pos=[0.2, 0.0, 1.2], dir=[0, 0, -1], diffuse=[0.5, 0.5, 0.5], castshadow=False)
    for arm in scene.arms:
        x, y = ARM_BASES[arm]
        frame = world.add_frame(pos=[x, y, 0.0])
        frame.attach_body(_load_arm(arm_mjcf).body("base"), f"{arm}/", "")
    for cube in scene.cubes:
        _add_cube(world, cube, RED if cube == "red" else BLUE)
    for name in scene.bins:
        _add_bin(world, name, BIN_CENTRES[name], RED if name == "red" else BLUE)
    # The front camera: across the table from the arms, looking down at the workspace (one
    # arm: closer in, so a 3 cm cube covers more than a few pixels of a small frame).
    pos, target = FRONT_CAMERA[len(scene.arms)]
    world.add_camera(
        name="front",
        pos=list(pos),
        fovy=50.0,
        quat=_quat_looking(np.subtract(target, pos), np.array([0, 0, 1.0])),
    )
    if len(scene.arms) == 2:
        _add_wrist_camera(spec, "left_arm", "left_wrist")
        _add_wrist_camera(spec, "right_arm", "right_wrist")
    return spec


def build_model(task: str, arm_mjcf: Path = ARM_MJCF) -> mujoco.MjModel:
    spec = build_spec(task, arm_mjcf)
    try:
        return spec.compile()
    except Exception as exc:
        raise SceneError(f"the {task} scene does not compile: {exc}") from None
