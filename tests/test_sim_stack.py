"""The simulator on the bus, between real processes: hub, sim, control and a policy.

The scripted expert (a policy service) must succeed through the whole loop, a shipped
checkpoint must run against the simulator all the same, and bad goals or an e-stop on the bus
must meet the servo process's safety code.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from bus import BusConfig, Message, Publisher, Subscriber, topics
from bus.clock import now
from workers.tasks import get_task

from conftest import REPO, Proc, bus_args, wait_until

START = 120.0  # a cold start imports torch / MuJoCo on a loaded 2-core machine
EPISODES = {"lift": 2, "sort": 1, "stack": 1}


def start_sim(procs: Callable[..., Proc], cfg: BusConfig, task: str, *extra: str) -> Proc:
    sim = procs("sim", "-m", "workers.sim", f"--task={task}", *bus_args(cfg), *extra)
    sim.wait_for_output("ready: sim", START)
    return sim


def collect(
    sub: Subscriber, topic: str, until: Callable[[list[Message]], bool], timeout: float, what: str
) -> list[Message]:
    seen: list[Message] = []

    def done() -> bool:
        while (msg := sub.recv(0.05)) is not None:
            if msg.topic == topic:
                seen.append(msg)
        return until(seen)

    wait_until(done, timeout, what)
    return seen


def outcomes(messages: list[Message]) -> list[dict]:
    return [m.data for m in messages if m.data.get("phase") == "outcome"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("task", ["lift", "sort", "stack"])
def test_the_expert_succeeds_through_the_whole_stack(
    task: str, hub: Proc, bus_cfg: BusConfig, procs: Callable[..., Proc]
) -> None:
    n = EPISODES[task]
    sub = Subscriber(bus_cfg, [topics.event("sim")], mode="every")
    try:
        # The expert plans from ground truth, not pixels: smaller frames keep the test's CPU
        # load (three cameras rendered in software) low on a 2-core machine.
        start_sim(procs, bus_cfg, task, "--camera_size=[240,320]")
        expert = procs(
            "expert", "-m", "workers.expert_policy", f"--task={task}", *bus_args(bus_cfg)
        )
        expert.wait_for_output("ready: scripted expert", START)
        control = procs(
            "control",
            "-m",
            "workers.control",
            f"--task={task}",
            f"--episodes={n}",
            "--episode_s=30",
            "--seed=3",
            *bus_args(bus_cfg),
        )
        seen = collect(
            sub,
            topics.event("sim"),
            lambda s: len(outcomes(s)) >= n,
            60.0 * n + 60,
            f"{n} {task} outcome(s) on event/sim",
        )
        control.wait_for_output(f"stopped after {n} episode(s)", 60)
    finally:
        sub.close()
    starts = [m.data for m in seen if m.data.get("phase") == "start"]
    assert [s["seed"] for s in starts] == [3 + i for i in range(n)]  # control's seeds
    assert all(set(s["cubes"]) == ({"red"} if task == "lift" else {"red", "blue"}) for s in starts)
    results = outcomes(seen)
    assert all(r["success"] for r in results), results
    # Control ended each episode on the outcome, long before its 30 s.
    assert "success (" in control.output()


@pytest.mark.timeout(600)
def test_a_shipped_checkpoint_drives_the_simulated_arm(
    hub: Proc, bus_cfg: BusConfig, procs: Callable[..., Proc]
) -> None:
    """Trained on other pictures, it is not expected to succeed; the loop must run all the same."""
    sub = Subscriber(bus_cfg, [topics.event("sim"), topics.health("sim")], mode="every")
    try:
        start_sim(procs, bus_cfg, "lift")
        policy = procs(
            "policy", "-m", "workers.policy", "--task=lift", "--device=cpu", *bus_args(bus_cfg)
        )
        policy.wait_for_output("ready", 240)
        procs(
            "control",
            "-m",
            "workers.control",
            "--task=lift",
            "--episodes=1",
            "--episode_s=6",
            *bus_args(bus_cfg),
        )
        seen = collect(
            sub, topics.event("sim"), lambda s: bool(outcomes(s)), 120, "the episode's outcome"
        )
        health = collect(sub, topics.health("sim"), lambda s: bool(s), 10, "health/sim")
    finally:
        sub.close()
    result = outcomes(seen)[0]
    assert result["reason"] and isinstance(result["success"], bool)
    arm = health[-1].data["arms"]["arm"]
    assert arm["goals_accepted"] > 30, arm  # the checkpoint's actions reached the arm


def send_goal(pub: Publisher, goal: np.ndarray) -> None:
    pub.publish(
        topics.action("arm"), {"goal": np.asarray(goal, dtype=np.float32)}, {"t_exec": now()}
    )


def test_bad_goals_and_the_estop_meet_the_servo_safety_code(
    hub: Proc, bus_cfg: BusConfig, procs: Callable[..., Proc], tmp_path
) -> None:
    latch = tmp_path / "estop.json"
    sim = start_sim(
        procs,
        bus_cfg,
        "lift",
        f"--servo.estop_latch_file={latch}",
        "--fps=5",
        "--camera_size=[96,128]",
    )
    pub = Publisher(bus_cfg, "test")
    sub = Subscriber(bus_cfg, [topics.health("sim"), topics.state("arm")], mode="latest")

    def sim_health() -> dict:
        sub.latest(0.05)
        msg = sub.newest.get(topics.health("sim"))
        return {} if msg is None else msg.data

    def arm_health() -> dict | None:
        return sim_health().get("arms", {}).get("arm")

    try:
        wait_until(lambda: pub.has_subscriber(topics.action("arm")), 30, "sim subscribed")
        start = wait_until(lambda: sub.latest(0.05).get(topics.state("arm")), 30, "state/arm")
        present = start.arrays["position"].astype(np.float64)
        nan = present.copy()
        nan[0] = np.nan
        far = present.copy()
        far[0] = 1e6
        # One kind at a time: the sim takes the newest goal per arm, so goals sent back to back
        # would hide all but the last. A NaN goal is dropped by the bus schema on receipt (a
        # counted bad message, logged with its source) and never reaches the guard; a short
        # one is refused by the guard; an out-of-range one is clamped to the joint limits.
        for goal, counted, what in (
            (nan, lambda: sim_health().get("bad_messages"), "the NaN goal dropped"),
            (
                present[:4],
                lambda: (h := arm_health()) and h["goals_rejected"]["length"],
                "the short goal refused",
            ),
            (
                far,
                lambda: (h := arm_health()) and h["goals_clamped_range"],
                "the out-of-range goal clamped",
            ),
        ):
            wait_until(lambda g=goal, c=counted: (send_goal(pub, g), c())[-1], 30, what)
        wait_until(
            lambda: (
                pub.publish(topics.event("estop"), data={"engaged": True, "reason": "test"}),
                (h := arm_health()) and h["estop"],
            )[-1],
            30,
            "e-stop engaged",
        )
        assert latch.exists()  # latched on disk, as the servo process does
        wait_until(
            lambda: (send_goal(pub, present), (h := arm_health()) and h["goals_rejected"]["estop"])[
                -1
            ],
            30,
            "a goal refused during the e-stop",
        )
        state = sub.latest(0.05)[topics.state("arm")].arrays["position"]
        assert np.isfinite(state).all()
        # The 1e6 goal was clamped: the pan went to its limit (110 deg), never beyond it.
        assert float(state[0]) <= 110.0 + 1.0, state
        assert sim.popen.poll() is None, sim.output()
    finally:
        sub.close()
        pub.close()
    assert "e-stop" in sim.output()


def test_every_episode_starts_at_rest_at_the_start_pose(
    hub: Proc, bus_cfg: BusConfig, procs: Callable[..., Proc]
) -> None:
    """A reset puts the arm back at its start pose; the last episode's goal, still fresh when
    control starts the next episode at once, must not pull it away again (it did: each
    episode opened with the arm yanked towards where the last one ended)."""
    start_sim(procs, bus_cfg, "lift", "--fps=5", "--camera_size=[96,128]")
    pub = Publisher(bus_cfg, "test")
    sub = Subscriber(bus_cfg, [topics.state("arm"), topics.event("sim")], mode="every")

    def start_episode(episode: int) -> Message:
        pub.publish(
            topics.event("episode"),
            data={"phase": "start", "episode": episode, "seed": episode, "task": "lift"},
        )
        return collect(
            sub,
            topics.event("sim"),
            lambda s: any(m.data.get("episode") == episode for m in s),
            30,
            f"the reset for episode {episode}",
        )[-1]

    def position() -> np.ndarray:
        msg = wait_until(lambda: sub.latest(0.05).get(topics.state("arm")), 30, "state/arm")
        return msg.arrays["position"].astype(np.float64)

    try:
        wait_until(lambda: pub.has_subscriber(topics.event("episode")), 30, "sim subscribed")
        start_episode(0)
        rest = position()
        away = rest + np.array([25.0, 15.0, -15.0, 0.0, 0.0, -20.0])
        wait_until(
            lambda: (send_goal(pub, away), np.abs(position() - away).max() < 3.0)[-1],
            60,
            "the arm at the goal away from the start pose",
        )
        reset = start_episode(1)
        after = collect(
            sub,
            topics.state("arm"),
            lambda s: sum(m.t_cap > reset.t_cap for m in s) >= 20,
            30,
            "20 states after the reset",
        )
    finally:
        sub.close()
        pub.close()
    drift = [np.abs(m.arrays["position"] - rest).max() for m in after if m.t_cap > reset.t_cap]
    assert max(drift) < 3.0, drift


def test_the_simulator_runs_episodes_on_its_own(
    hub: Proc, bus_cfg: BusConfig, procs: Callable[..., Proc]
) -> None:
    sub = Subscriber(bus_cfg, [topics.event("sim"), topics.event("episode")], mode="every")
    try:
        start_sim(
            procs,
            bus_cfg,
            "stack",
            "--episodes_from=self",
            "--episode_s=1.5",
            "--seed=11",
            "--fps=5",
            "--camera_size=[96,128]",
        )
        seen = collect(
            sub, topics.event("sim"), lambda s: len(outcomes(s)) >= 2, 60, "two self-run episodes"
        )
    finally:
        sub.close()
    first, second = outcomes(seen)[:2]
    assert (first["seed"], second["seed"]) == (11, 12)
    assert not first["success"] and first["reason"].startswith("timeout after 1.5 s; red at (")


def test_an_unknown_task_or_camera_size_is_a_clear_exit_2() -> None:
    for args, text in (
        (["--task=pour"], "unknown task 'pour'"),
        (["--camera_size=[480]"], "camera size [480]"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "workers.sim", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert text in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert get_task("sort").cameras == ("front", "left_wrist", "right_wrist")
