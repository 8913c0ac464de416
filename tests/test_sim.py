"""The simulator in-process: physics in lerobot units, safety, episodes, rendering, bad input.

Real MuJoCo physics on the project's own scenes and real EGL rendering (Mesa in software here);
the processes on the bus are in test_sim_stack.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from core.safety import GoalGuard, SafetyLimits
from drivers.servo import JOINTS, ArmFault
from drivers.sim import scene as scenes
from drivers.sim.arm import MujocoArm
from drivers.sim.expert import plan_episode
from drivers.sim.render import CameraRig
from drivers.sim.world import START_POSE, SimWorld

PAN, LIFT, GRIP = (
    JOINTS.index("shoulder_pan"),
    JOINTS.index("shoulder_lift"),
    JOINTS.index("gripper"),
)


@pytest.fixture(scope="module")
def lift_world() -> SimWorld:
    return SimWorld("lift")


def settle(world: SimWorld, seconds: float) -> None:
    world.advance(seconds)


def test_a_goal_moves_the_joint_toward_it(lift_world: SimWorld) -> None:
    world = lift_world
    world.reset(0)
    start = world.positions("arm").copy()
    goal = START_POSE.copy()
    goal[PAN] += 20.0
    world.set_goal("arm", goal)
    settle(world, 1.0)
    moved = world.positions("arm")
    assert abs(moved[PAN] - goal[PAN]) < 2.0, (start, moved)
    assert abs(moved[PAN] - start[PAN]) > 15.0


def test_units_and_signs_match_a_calibrated_follower(lift_world: SimWorld) -> None:
    world = lift_world
    world.reset(0)
    lower, upper = world.arms["arm"].unit_range()
    # Body joints in degrees with 0 in the middle of the range (wrist_roll's MJCF range is
    # -157..163, off by 5.6 degrees); the gripper 0 (closed) to 100.
    np.testing.assert_allclose(lower[:5] + upper[:5], [0, 0, 0, 0, 5.6], atol=0.1)
    assert (lower[GRIP], upper[GRIP]) == (0.0, 100.0)
    assert 200 < upper[PAN] - lower[PAN] < 240  # the STS3215 pan covers about 220 degrees

    def pads_apart(gripper: float) -> float:
        goal = START_POSE.copy()
        goal[GRIP] = gripper
        world.set_goal("arm", goal)
        settle(world, 1.0)
        model, data = world.model, world.data
        a, b = (
            data.geom_xpos[model.geom(f"arm/{p}").id] for p in ("fixed_jaw_pad", "moving_jaw_pad")
        )
        return float(np.linalg.norm(a - b))

    assert pads_apart(100.0) > pads_apart(0.0) + 0.02  # 100 = open, 0 = closed

    # The MJCF's directions (docs/simulator.md): positive shoulder_pan turns the arm to its
    # right (-y, clockwise seen from above); positive shoulder_lift tips the arm forward, down.
    def grasp_site(goal: np.ndarray) -> np.ndarray:
        world.set_goal("arm", goal)
        settle(world, 1.5)
        return world.data.site_xpos[world.model.site("arm/gripperframe").id].copy()

    home = grasp_site(START_POSE)
    pan = START_POSE.copy()
    pan[PAN] += 30
    assert grasp_site(pan)[1] < home[1] - 0.03
    lift = START_POSE.copy()
    lift[LIFT] += 20
    assert grasp_site(lift)[2] < home[2] - 0.02


def test_the_estop_holds_the_arm_where_it_is(lift_world: SimWorld) -> None:
    world = lift_world
    world.reset(0)
    arm = MujocoArm(world, "arm")
    arm.connect()
    lower, upper = arm.joint_range()
    guard = GoalGuard(SafetyLimits(lower, upper, np.full(6, 10.0), 1 / 30, 0.25, 0.5))
    goal = START_POSE.copy()
    goal[PAN] += 40
    assert guard.offer(goal, 0.0, 0.0) is None
    for k in range(6):  # part of the way there
        arm.write_goals(guard.command(arm.read_positions(), k / 30).goal)
        settle(world, 1 / 30)
    stopped_at = arm.read_positions().copy()
    guard.engage_estop(stopped_at, "test")
    assert guard.offer(goal, 0.0, 0.3) == "estop"
    for k in range(60):  # two seconds of ticks, every goal refused
        arm.write_goals(guard.command(arm.read_positions(), 0.3 + k / 30).goal)
        settle(world, 1 / 30)
    held = arm.read_positions()
    assert abs(held[PAN] - stopped_at[PAN]) < 1.5, (stopped_at, held)
    assert guard.holding and guard.estop


def test_reset_is_deterministic_for_a_seed() -> None:
    runs = []
    for _ in range(2):
        world = SimWorld("stack")
        init = world.reset(7)
        goal = START_POSE.copy()
        goal[PAN] -= 10
        world.set_goal("left_arm", goal)
        world.advance(0.5)
        runs.append((init.cubes, world.data.qpos.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    other = SimWorld("stack").reset(8)
    assert other.cubes != runs[0][0]


def test_lift_success_and_failure_are_detected(lift_world: SimWorld) -> None:
    world = lift_world
    world.reset(0)
    world.advance(0.5)
    assert world.judge() is None  # the cube on the table: neither
    adr = world.cube_qpos["red"]
    world.data.qpos[adr : adr + 3] = [0.7, 0.0, 0.2]  # pushed off the table
    world.advance(1.0)
    outcome = world.judge()
    assert outcome is not None and not outcome.success and "fell off" in outcome.reason


@pytest.mark.parametrize("task", ["lift", "sort", "stack"])
def test_the_expert_succeeds_and_the_success_is_detected(task: str) -> None:
    world = SimWorld(task)
    init = world.reset(3)
    plan = plan_episode(task, init.cubes, model=world.model)
    outcome = None
    for k in range(int((plan.duration_s + 2) * 30)):
        for arm, goal in plan.goals_at(k / 30).items():
            world.set_goal(arm, goal)
        world.advance(1 / 30)
        if (outcome := world.judge()) is not None:
            break
    assert outcome is not None and outcome.success, (outcome, init.cubes)
    assert (
        outcome.reason
        == {
            "lift": "cube held 5 cm above the table for 1 s",
            "sort": "each cube at rest in its own bin",
            "stack": "red cube at rest on the blue one for 1 s",
        }[task]
    )


def test_holding_still_does_not_succeed() -> None:
    world = SimWorld("stack")
    world.reset(1)
    for _ in range(90):
        world.advance(1 / 30)
        assert world.judge() is None


def test_cameras_render_the_scene() -> None:
    world = SimWorld("sort")
    rig = CameraRig(
        world, {"front": (480, 640), "left_wrist": (120, 160), "right_wrist": (120, 160)}
    )
    rig.open()
    try:
        frames = {f.camera: f for f in rig.render(lambda: 1.0)}
        front = frames["front"].image
        assert front.shape == (480, 640, 3) and front.dtype == np.uint8
        assert frames["left_wrist"].image.shape == (120, 160, 3)
        red = (front[..., 0] > 150) & (front[..., 1] < 90) & (front[..., 2] < 90)
        assert red.sum() > 50  # the red cube (and its bin) are in view
        # The image follows the scene: the cubes moved away, the picture changes.
        for cube in ("red", "blue"):
            adr = world.cube_qpos[cube]
            world.data.qpos[adr : adr + 3] = [0.45, 0.45, 0.015]
        moved = {f.camera: f for f in rig.render(lambda: 2.0)}["front"].image
        assert np.abs(moved.astype(int) - front).mean() > 0.5
        assert frames["front"].t_snapshot == 1.0
    finally:
        rig.close()


def test_cameras_see_the_lighter_meshes_and_physics_the_full_ones() -> None:
    import mujoco

    model = SimWorld("stack").model
    seen = collided = 0
    for i in range(model.ngeom):
        geom = model.geom(i)
        if geom.type[0] != mujoco.mjtGeom.mjGEOM_MESH:
            continue
        mesh = model.mesh(int(geom.dataid[0]))
        faces = int(model.mesh_facenum[mesh.id])
        if geom.group[0] == 2:  # visual: drawn, never collides
            assert mesh.name.endswith("_render") and geom.contype[0] == 0, mesh.name
            seen += faces
        else:
            assert not mesh.name.endswith("_render"), (geom.name, mesh.name)
            collided += faces
    assert collided > 0 and 0 < seen < collided / 3, (seen, collided)


# -- bad input --------------------------------------------------------------------------------
def test_an_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(scenes.SceneError, match="unknown task 'pour'.*lift, sort, stack"):
        SimWorld("pour")


def test_a_scene_file_that_does_not_load_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "so101.xml"
    broken.write_text("<mujoco><worldbody><body name='base'>")
    with pytest.raises(scenes.SceneError, match=f"cannot load the arm model {broken}"):
        scenes.build_model("lift", broken)


def test_a_nan_goal_never_reaches_the_actuators(lift_world: SimWorld) -> None:
    world = lift_world
    world.reset(0)
    arm = MujocoArm(world, "arm")
    arm.connect()
    before = world.data.ctrl.copy()
    bad = START_POSE.copy()
    bad[PAN] = np.nan
    with pytest.raises(ArmFault, match="not finite"):
        arm.write_goals(bad)
    np.testing.assert_array_equal(world.data.ctrl, before)
    guard = GoalGuard(SafetyLimits(*arm.joint_range(), np.full(6, 10.0), 1 / 30, 0.25, 0.5))
    assert guard.offer(bad, 0.0, 0.0) == "nan"


def test_a_goal_beyond_the_limits_is_clamped_to_the_model(lift_world: SimWorld) -> None:
    world = lift_world
    world.reset(0)
    far = START_POSE.copy()
    far[PAN] = 1e9
    world.set_goal("arm", far)
    j = world.arms["arm"]
    assert world.data.ctrl[j.act[PAN]] == pytest.approx(j.hi[PAN])
    lower, upper = j.unit_range()
    guard = GoalGuard(SafetyLimits(lower, upper, np.full(6, 10.0), 1 / 30, 0.25, 0.5))
    assert guard.offer(far, 0.0, 0.0) is None and guard.clamped_range == 1


def test_the_expert_plan_waits_for_a_lagging_arm_but_not_forever() -> None:
    from drivers.sim.expert import ExpertPlan, PlanFollower

    ramp = np.repeat(np.arange(300, dtype=np.float32)[:, None], 6, axis=1)  # 1 deg a frame
    follower = PlanFollower(ExpertPlan(30.0, {"arm": ramp}), t_start=0.0)
    follower.observe(1.0, {"arm": ramp[30]})  # on time: nothing changes
    assert follower.offset == 0.0
    follower.observe(2.0, {"arm": ramp[30]})  # a second behind (a hold): the clock waits
    assert 0.7 < follower.offset < 1.0 and follower.plan_time(2.0) < 1.3
    for k in range(200):  # an arm that never catches up: the plan goes on after 4 s
        follower.observe(3.0 + k / 30, {"arm": ramp[30]})
    assert follower.offset == pytest.approx(follower.max_offset_s)


def test_arms_resting_after_the_plan_are_not_lagging_behind_it() -> None:
    from drivers.sim.expert import ExpertPlan, PlanFollower

    ramp = np.repeat(np.arange(300, dtype=np.float32)[:, None], 6, axis=1)
    follower = PlanFollower(ExpertPlan(30.0, {"arm": ramp}), t_start=0.0)
    for k in range(100):  # long after the plan's 10 s, the arm where the plan ended
        follower.observe(12.0 + k / 10, {"arm": ramp[-1]})
    assert (follower.offset, follower.setbacks) == (0.0, 0)


def test_the_expert_clock_starts_when_its_plan_is_ready() -> None:
    import logging

    from bus import Message, clock
    from workers.expert_policy import ExpertConfig, ExpertPolicy

    policy = ExpertPolicy(ExpertConfig(task="lift"), logging.getLogger("test"))
    init = SimWorld("lift").reset(3)
    asked = clock.now()
    start = {"phase": "start", "task": "lift", "episode": 0, "seed": 3, "cubes": init.cubes}
    # A reset announced a while ago (a slow plan, a busy machine): the plan must not open
    # already that far ahead of the arm.
    policy.on_sim(Message("event/sim", data=start, t_cap=asked - 2.0))
    assert policy.follower is not None and policy.follower.t_start >= asked
    request = Message(
        "policy/lift",
        arrays={"state.arm": np.zeros(6, np.float32)},
        data={"t_obs": policy.follower.t_start},
    )
    first = policy.handle(request).arrays["actions"][0]
    np.testing.assert_allclose(first, policy.follower.plan.goals_at(0.0)["arm"])


def test_a_failure_says_where_the_cubes_are() -> None:
    world = SimWorld("sort")
    init = world.reset(2)
    x, y, z = init.cubes["red"][:3]
    assert f"red at ({x:.3f}, {y:.3f}, {z:.3f}) m, moved 0.0 cm" in world.where()
    adr = world.cube_qpos["blue"]
    world.data.qpos[adr : adr + 3] = [*scenes.BIN_CENTRES["blue"], 0.02]  # dropped in its bin
    red = world.cube_qpos["red"]
    world.data.qpos[red + 1] += 0.05  # pushed 5 cm sideways
    world.advance(1.0)
    assert "blue in its bin" in world.where()
    assert re.search(r"red at \(.*\) m, moved (4\.\d|5\.\d) cm", world.where()), world.where()
