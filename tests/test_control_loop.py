"""The control loop between real processes: hub + replay + policy stand-in + control."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from bus import BusConfig, Publisher, Subscriber

from conftest import bus_args, wait_until


def start_replay(procs, cfg: BusConfig, launcher: tuple[str, ...] = ()) -> None:
    """The camera source, ready before control starts: on a slow machine its start-up (the
    dataset's index and decoders) outlasted a short episode, which then ran without a frame."""
    replay = procs("replay", *launcher, "-m", "workers.replay", "--task=lift", *bus_args(cfg))
    replay.wait_for_output("ready:")


def start(
    procs,
    cfg: BusConfig,
    *,
    latency: float = 0.05,
    episode_s: float = 600,
    control_args: tuple[str, ...] = (),
    replay: bool = True,
    launcher: tuple[str, ...] = (),
):
    """`launcher`: what runs each module instead of plain `python -m` (tests/stepped_clock.py)."""
    if replay:
        start_replay(procs, cfg, launcher)
    policy = procs(
        "policy",
        *launcher,
        "-m",
        "workers.stand_in_policy",
        "--task=lift",
        f"--latency={latency}",
        *bus_args(cfg),
    )
    policy.wait_for_output("ready:")
    control = procs(
        "control",
        *launcher,
        "-m",
        "workers.control",
        "--task=lift",
        "--episodes=1",
        f"--episode_s={episode_s}",
        "--policy_timeout=1.5",
        *control_args,
        *bus_args(cfg),
    )
    control.wait_for_output("ready:")
    return policy, control


def next_matching(sub: Subscriber, pred, what: str):
    def find():
        while (msg := sub.recv(0.2)) is not None:
            if pred(msg):
                return msg
        return None

    return wait_until(find, what=what)


def is_hold(holding: bool, reason: str = ""):
    return lambda m: (
        m.topic == "event/hold" and m.data["holding"] is holding and reason in m.data["reason"]
    )


def test_actions_flow_at_the_set_rate_with_their_execution_times(bus_cfg, hub, procs) -> None:
    with Subscriber(bus_cfg, ["action/", "event/episode", "chunk/"], mode="every") as sub:
        start(procs, bus_cfg, episode_s=8, control_args=("--fps=20",))
        start_marker = next_matching(
            sub,
            lambda m: m.topic == "event/episode" and m.data["source"] == "control",
            "episode start",
        )
        assert start_marker.data["phase"] == "start" and start_marker.data["task"] == "lift"
        actions, chunks = [], 0
        while True:
            msg = next_matching(sub, lambda m: True, "actions and the stop marker")
            if msg.topic == "chunk/lift":
                chunks += 1
                assert msg.arrays["actions"].shape == (16, 6)
            elif msg.topic == "action/arm":
                actions.append(msg)
            elif msg.data.get("source") == "control" and msg.data["phase"] == "stop":
                stats = msg.data["stats"]
                break
    assert chunks >= 2 and len(actions) >= 40
    t_exec = np.array([m.data["t_exec"] for m in actions])
    # One action per tick on the 20 Hz grid: every gap a whole number of ticks, mostly one.
    ticks = np.diff(t_exec) * 20
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-4)  # float64 at 1.7e9 s
    assert np.median(ticks) == pytest.approx(1.0)
    assert all(
        np.isfinite(m.arrays["goal"]).all() and m.arrays["goal"].shape == (6,) for m in actions
    )
    assert stats["actions"] == len(actions) and stats["replies"] >= chunks


def test_asking_ahead_of_time_stalls_far_less_than_the_synchronous_baseline(
    bus_cfg, hub, procs
) -> None:
    """The control loop's reason to exist: with a 250 ms policy and 16-action chunks, asking
    only when the queue is empty stalls at every chunk edge; asking ahead hides the latency."""
    stall = {}
    start_replay(procs, bus_cfg)
    procs(
        "policy",
        "-m",
        "workers.stand_in_policy",
        "--task=lift",
        "--latency=0.25",
        *bus_args(bus_cfg),
    ).wait_for_output("ready:")
    for schedule in ("sync", "ahead"):
        with Subscriber(bus_cfg, ["event/episode"], mode="every") as sub:
            procs(
                f"control-{schedule}",
                "-m",
                "workers.control",
                "--task=lift",
                "--episodes=1",
                "--episode_s=10",
                f"--schedule={schedule}",
                *bus_args(bus_cfg),
            )
            stall[schedule] = stop_marker(sub).data["stats"]["stall_ms_per_min"]
    assert stall["sync"] > 0, stall
    assert stall["ahead"] * 3 < stall["sync"], stall


def test_a_policy_slower_than_a_chunk_causes_reported_holds(bus_cfg, hub, procs) -> None:
    with Subscriber(bus_cfg, ["event/hold", "event/control"], mode="every") as sub:
        _, control = start(procs, bus_cfg, latency=0.8)
        hold = next_matching(sub, is_hold(True, "chunk arrived too late"), "a hold")
        assert hold.data["arm"] == "arm"
        slow = next_matching(sub, lambda m: m.topic == "event/control", "'policy too slow'")
        assert slow.data["kind"] == "policy_too_slow"
        assert slow.data["latency_ms"] > slow.data["chunk_ms"] / 2
        assert "policy workers (SO101_POLICY_WORKERS)" in slow.data["text"]
    control.wait_for_output("policy too slow: latency")


def test_killed_policy_leads_to_a_hold_and_recovery(bus_cfg, hub, procs) -> None:
    with Subscriber(bus_cfg, ["event/hold", "action/"], mode="every") as sub:
        policy, control = start(procs, bus_cfg)
        next_matching(sub, lambda m: m.topic == "action/arm", "actions before the kill")
        policy.stop(signal.SIGKILL)
        hold = next_matching(sub, is_hold(True), "a hold after the kill")
        assert any(w in hold.data["reason"] for w in ("policy", "worker")), hold.data
        procs(
            "policy2",
            "-m",
            "workers.stand_in_policy",
            "--task=lift",
            "--latency=0.05",
            *bus_args(bus_cfg),
        ).wait_for_output("ready:")
        next_matching(sub, is_hold(False, "fresh actions"), "the hold to end")
        next_matching(sub, lambda m: m.topic == "action/arm", "actions after recovery")
    log = control.output()
    assert "hold:" in log and "resumed: fresh actions" in log


def test_policy_errors_are_logged_with_their_message_and_held_on(bus_cfg, hub, procs) -> None:
    with (
        Subscriber(bus_cfg, ["event/hold", "action/"], mode="every") as sub,
        Publisher(bus_cfg, "test") as pub,
    ):
        _, control = start(procs, bus_cfg)
        next_matching(sub, lambda m: m.topic == "action/arm", "first actions")
        assert pub.wait_for_subscriber("event/stand_in", 30)
        pub.publish("event/stand_in", data={"fail": "camera calibration missing"})
        hold = next_matching(sub, is_hold(True, "camera calibration missing"), "an error hold")
        assert hold.data["reason"].startswith("policy error")
        pub.publish("event/stand_in", data={"fail": None})
        next_matching(sub, is_hold(False), "recovery after the errors stop")
    control.wait_for_output("policy error reply: camera calibration missing")


def test_error_replies_back_off_instead_of_a_request_storm(bus_cfg, hub, procs) -> None:
    """A failing (or still loading) policy answers in microseconds; re-asking at once made
    thousands of requests a second. Control backs off (50 ms doubling to 1 s)."""
    with (
        Subscriber(bus_cfg, ["health/control"], mode="every") as sub,
        Publisher(bus_cfg, "test") as pub,
    ):
        start(procs, bus_cfg)
        assert pub.wait_for_subscriber("event/stand_in", 30)
        pub.publish("event/stand_in", data={"fail": "still loading"})
        first = next_matching(sub, lambda m: m.data["errors"] >= 3, "the first error replies")
        # Four more seconds of a failing policy, timed by control's own health reports.
        later = next_matching(
            sub, lambda m: m.data["uptime_s"] >= first.data["uptime_s"] + 4, "four more seconds"
        )
    assert later.data["errors"] - first.data["errors"] <= 8, (first.data, later.data)


def stop_marker(sub: Subscriber):
    return next_matching(
        sub,
        lambda m: (
            m.topic == "event/episode"
            and m.data["phase"] == "stop"
            and m.data.get("source") == "control"
        ),
        "the episode to end",
    )


def test_inpaint_join_sends_the_committed_actions_and_leaves_no_seam(bus_cfg, hub, procs) -> None:
    """The stand-in keeps a prefix as an inpainting policy does: every switch to a new chunk
    lands on the action already planned. Blending the same chunks does jump."""
    with Subscriber(bus_cfg, ["event/episode"], mode="every") as sub:
        # Long enough for several chunks after the replay's first frames (seconds, loaded).
        _, control = start(procs, bus_cfg, latency=0.15, episode_s=10)
        stats = stop_marker(sub).data["stats"]
    control.wait_for_output("join: inpaint (the policy accepts a committed prefix)")
    assert stats["join"] == "inpaint" and stats["seams"] >= 3
    assert stats["seam_jump_p99_deg"] == 0.0
    with Subscriber(bus_cfg, ["event/episode"], mode="every") as sub:
        procs(
            "control-blend",
            "-m",
            "workers.control",
            "--task=lift",
            "--episodes=1",
            "--episode_s=8",
            "--join=blend",
            *bus_args(bus_cfg),
        )
        blended = stop_marker(sub).data["stats"]
    assert blended["join"] == "blend" and blended["seams"] >= 3
    assert blended["seam_jump_p99_deg"] > 0.0


def test_two_workers_take_turns_and_a_killed_one_is_failed_over(bus_cfg, hub, procs) -> None:
    start_replay(procs, bus_cfg)
    workers = {}
    for name in ("a", "b"):
        workers[name] = procs(
            f"policy-{name}",
            "-m",
            "workers.stand_in_policy",
            "--task=lift",
            "--latency=0.3",
            f"--name={name}",
            *bus_args(bus_cfg),
        )
    for worker in workers.values():
        worker.wait_for_output("ready:")
    with Subscriber(bus_cfg, ["chunk/", "action/", "event/hold"], mode="every") as sub:
        control = procs(
            "control",
            "-m",
            "workers.control",
            "--task=lift",
            "--episodes=1",
            "--episode_s=600",
            "--policy_workers=2",
            *bus_args(bus_cfg),
        )
        control.wait_for_output("policy workers in use: 2")
        served = [
            next_matching(sub, lambda m: m.topic == "chunk/lift", "chunks").data["worker"]
            for _ in range(12)
        ]
        assert served.count("a") >= 3 and served.count("b") >= 3, served
        workers["a"].stop(signal.SIGKILL)
        control.wait_for_output("policy workers in use: 1")
        after = []
        while len(after) < 60:  # two more seconds of actions, and every hold with its reason
            msg = next_matching(sub, lambda m: m.topic != "chunk/lift", "actions after the kill")
            if msg.topic == "event/hold":
                assert msg.data["reason"], msg.data
            else:
                after.append(msg)
        chunk = next_matching(sub, lambda m: m.topic == "chunk/lift", "a chunk after the kill")
        assert chunk.data["worker"] == "b"


def test_stale_actions_are_skipped_and_counted(bus_cfg, hub, procs) -> None:
    with Subscriber(bus_cfg, ["event/episode"], mode="every") as sub:
        start(procs, bus_cfg, latency=0.3, episode_s=5)
        stop = next_matching(
            sub,
            lambda m: m.data.get("source") == "control" and m.data["phase"] == "stop",
            "the episode to end",
        )
    # Each chunk arrives ~0.3 s after its observation: its first ~9 actions are already past.
    assert stop.data["stats"]["skipped_actions"] >= 9


def test_a_lagging_camera_is_a_named_cause(bus_cfg, hub, procs) -> None:
    with (
        Subscriber(bus_cfg, ["health/control"], mode="latest") as health,
        Publisher(bus_cfg, "old-camera") as cam,
    ):
        start(procs, bus_cfg, replay=False)
        image = np.zeros((480, 640, 3), np.uint8)

        def lag_reported() -> bool:
            from bus.clock import now

            cam.publish("camera/front", {"image": image}, t_cap=now() - 2.0)
            cam.publish("state/arm", {"position": np.zeros(6, np.float32)})
            msg = health.latest(0.1).get("health/control")
            return msg is not None and msg.data["obs_not_sent"].get("camera/front lags", 0) > 0

        wait_until(lag_reported, what="camera/front lags in the control health")
        msg = health.latest()["health/control"]
        assert msg.data["holding"] and "camera/front lags" in msg.data["hold_reason"]


def test_a_wall_clock_step_is_re_anchored_not_a_stall(bus_cfg, hub, procs, tmp_path) -> None:
    """NTP setting the clock, or a paused machine resuming, moves every process's wall clock
    (the bus stamps) and not the monotonic one (control's schedule). Unnoticed, a forward step
    put every new chunk that far in the future, a backward one every action in the past."""
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    launcher = ("tests/stepped_clock.py", str(offset))
    with Subscriber(bus_cfg, ["action/arm", "event/control"], mode="every") as sub:
        _, control = start(procs, bus_cfg, launcher=launcher)
        next_matching(sub, lambda m: m.topic == "action/arm", "actions before the step")
        for step, stepped in ((600.0, 600.0), (-600.0, 0.0)):
            offset.write_text(str(stepped))
            notice = next_matching(
                sub,
                lambda m: m.topic == "event/control" and m.data.get("kind") == "clock_step",
                f"control to notice the {step:+.0f} s step",
            )
            assert notice.data["step_s"] == pytest.approx(step, abs=0.5)
            # Actions flow again, each for the tick it runs at on the stepped clock.
            next_matching(
                sub,
                lambda m: (
                    m.topic == "action/arm"
                    and abs(m.data["t_exec"] - (time.time() + stepped)) < 1.0  # noqa: B023
                ),
                f"actions on the clock stepped {step:+.0f} s",
            )
    assert "the wall clock stepped +600.0" in control.output()
    assert "the wall clock stepped -600.0" in control.output()


def test_bad_arguments_exit_2(bus_cfg, procs) -> None:
    proc = procs("control", "-m", "workers.control", "--schedule=never", *bus_args(bus_cfg))
    assert proc.popen.wait(60) == 2
    assert "expected ahead or sync" in proc.output()
