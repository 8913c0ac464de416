"""The replay process on a real hub: pacing, order, markers, open-loop error, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bus import BusConfig, Publisher, Subscriber
from drivers.replay import DatasetReplay

from conftest import REPO, bus_args, wait_until

LIFT = REPO / "datasets" / "lift"


def start_replay(procs, cfg: BusConfig, *extra: str):
    proc = procs(
        "replay",
        "-m",
        "workers.replay",
        "--loop=false",
        "--wait_for_listeners=30",
        *extra,
        *bus_args(cfg),
    )
    return proc


def collect_episode(sub: Subscriber, proc, on_message=None) -> list:
    """Messages from the start marker to the stop marker of one episode."""
    got, started = [], False
    while True:
        msg = wait_until(
            lambda: sub.recv(0.5) or (proc.popen.poll() is not None and "exit"),
            what="replay messages",
        )
        assert msg != "exit", proc.output()
        if msg.topic == "event/episode" and msg.data["phase"] == "start":
            started = True
        if not started:
            continue
        got.append(msg)
        if on_message:
            on_message(msg)
        if msg.topic == "event/episode" and msg.data["phase"] == "stop":
            return got


def test_every_frame_of_an_episode_in_order_at_the_dataset_rate(bus_cfg, hub, procs) -> None:
    ref = DatasetReplay(LIFT, episodes=[1])
    n = ref.num_frames(1)
    with Subscriber(bus_cfg, ["camera/", "state/", "event/episode"], mode="every") as sub:
        proc = start_replay(procs, bus_cfg, "--task=lift", "--episodes=[1]")
        msgs = collect_episode(sub, proc)
    frames = [m for m in msgs if m.topic == "camera/front"]
    states = [m for m in msgs if m.topic == "state/arm"]
    assert [m.data["frame"] for m in frames] == list(range(n))
    assert all(m.arrays["image"].shape == (480, 640, 3) for m in frames)
    t_caps = [m.t_cap for m in frames]
    assert all(b > a for a, b in zip(t_caps, t_caps[1:], strict=False))
    # Paced in real time: never faster than the dataset's 30 fps (load can only slow it).
    assert t_caps[-1] - t_caps[0] >= (n - 1) / 30 * 0.95
    recorded = ref.recorded_actions(1)["arm"]
    assert len(states) == n == recorded.shape[0]
    expected = [s.states["arm"] for s in ref.steps(1)]
    np.testing.assert_array_equal(
        np.stack([m.arrays["position"] for m in states]), np.stack(expected)
    )
    assert states[0].data["names"][0] == "shoulder_pan.pos"
    assert msgs[0].data == {
        "phase": "start",
        "episode": 1,
        "task": "lift",
        "source": "replay",
        "frames": n,
        "fps": 30,
    }
    ref.close()


def test_speed_factor_plays_faster(bus_cfg, hub, procs) -> None:
    with Subscriber(bus_cfg, ["camera/", "event/episode"], mode="every") as sub:
        proc = start_replay(procs, bus_cfg, "--task=lift", "--episodes=[0]", "--speed=3")
        msgs = collect_episode(sub, proc)
    t = [m.t_cap for m in msgs if m.topic == "camera/front"]
    # 3x faster than real time: not faster than that, and faster than real time (speed 1).
    assert t[-1] - t[0] >= (len(t) - 1) / 90 * 0.95
    assert t[-1] - t[0] < (len(t) - 1) / 30
    assert "speed 3.00" in proc.output()


def test_open_loop_error_against_known_actions(bus_cfg, hub, procs) -> None:
    ref = DatasetReplay(LIFT, episodes=[0])
    recorded = ref.recorded_actions(0)["arm"]
    ref.close()
    offset = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], np.float32)
    with (
        Subscriber(bus_cfg, ["state/", "event/"], mode="every") as sub,
        Publisher(bus_cfg, "test-control") as pub,
    ):
        frame = {"i": 0}

        def command(msg) -> None:
            # Answer every state with the recorded action for that frame, plus a known offset,
            # to be executed at the state's own time.
            if msg.topic == "state/arm":
                pub.publish(
                    "action/arm", {"goal": recorded[frame["i"]] + offset}, {"t_exec": msg.t_cap}
                )
                frame["i"] += 1

        proc = start_replay(procs, bus_cfg, "--task=lift", "--episodes=[0]")
        msgs = collect_episode(sub, proc, command)
        report = wait_until(
            lambda: (
                next((m for m in msgs if m.topic == "event/open_loop"), None)
                or (m := sub.recv(0.5))
                and m.topic == "event/open_loop"
                and m
            ),
            what="the open-loop report",
        )
    report = report.data
    assert report["episode"] == 0
    assert report["actions"]["arm"] >= recorded.shape[0] - 2  # the last may miss the episode
    np.testing.assert_allclose(report["rmse_per_joint"]["arm"], offset, atol=1e-3)
    assert report["rmse"] == pytest.approx(
        float(np.sqrt(np.mean(offset.astype(float) ** 2))), abs=1e-3
    )
    proc.wait_for_output("open-loop error vs recorded actions: RMSE")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset=/nonexistent/ds"], "does not exist"),
        (["--dataset=REPO/bus"], "LeRobotDataset"),
        (["--episodes=[999]"], "out of range"),
        (["--speed=0"], "--speed must be > 0"),
        (["--task=fly"], "unknown task 'fly'"),
        (["--task=sort", "--dataset=REPO/datasets/lift"], "but task sort drives"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(bus_cfg, procs, args, message) -> None:
    args = [a.replace("REPO", str(REPO)) for a in args]
    proc = procs("replay", "-m", "workers.replay", *args, *bus_args(bus_cfg))
    assert proc.popen.wait(120) == 2
    errors = [line for line in proc.output().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and message in errors[0], proc.output()


def test_plays_a_dataset_with_other_cameras_and_sizes(bus_cfg, hub, procs, tmp_path: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "other"
    joint = {"dtype": "float32", "shape": (4,), "names": ["a.pos", "b.pos", "c.pos", "d.pos"]}
    ds = LeRobotDataset.create(
        "local/other",
        fps=15,
        root=root,
        video_backend="pyav",
        features={
            "observation.state": joint,
            "action": joint,
            "observation.images.top": {
                "dtype": "video",
                "shape": (72, 96, 3),
                "names": ["height", "width", "channels"],
            },
        },
    )
    for t in range(10):
        ds.add_frame(
            {
                "observation.images.top": np.full((72, 96, 3), 20 * t, np.uint8),
                "observation.state": np.full(4, t, np.float32),
                "action": np.full(4, t + 1, np.float32),
                "task": "other",
            }
        )
    ds.save_episode()
    ds.finalize()
    with Subscriber(bus_cfg, ["camera/", "state/", "event/episode"], mode="every") as sub:
        proc = start_replay(procs, bus_cfg, f"--dataset={root}")
        msgs = collect_episode(sub, proc)
    tops = [m for m in msgs if m.topic == "camera/top"]
    states = [m for m in msgs if m.topic == "state/arm"]
    assert len(tops) == len(states) == 10
    assert tops[0].arrays["image"].shape == (72, 96, 3)
    assert [float(m.arrays["position"][0]) for m in states] == list(range(10))
    assert msgs[0].data["fps"] == 15
