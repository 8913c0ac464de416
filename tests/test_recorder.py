"""The recorder worker on a real hub: what it records, what it refuses, and SIGKILLs of the
recorder process while it records and while it saves. The writer's own crash safety is in
test_episode_writer.py, the frame clock in test_frame_clock.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from bus import BusConfig, Publisher, Subscriber
from drivers.recording import (
    JOURNAL_DIR,
)

from conftest import REPO, bus_args, load_recording, small_filesystem, wait_until

LIFT = REPO / "datasets" / "lift"


def start_recorder(procs, cfg: BusConfig, root: Path, *extra: str, name: str = "recorder"):
    return procs(name, "-m", "workers.recorder", f"--root={root}", *extra, *bus_args(cfg))


def saved_count(proc) -> int:
    return len(re.findall(r"episode \d+ saved", proc.output()))


def test_refuses_a_mismatched_or_unwritable_folder(tmp_path, bus_cfg, procs) -> None:
    lift_copy = tmp_path / "lift"
    shutil.copytree(LIFT, lift_copy)
    mismatch = start_recorder(procs, bus_cfg, lift_copy, "--task=sort", name="mismatch")
    with contextlib.ExitStack() as stack:
        unwritable = None
        with contextlib.suppress(pytest.skip.Exception):
            disk = stack.enter_context(small_filesystem(tmp_path / "ro", "64k", readonly=True))
            unwritable = start_recorder(procs, bus_cfg, disk / "lift", name="unwritable")
        if unwritable is None and os.geteuid() != 0:
            (tmp_path / "ro").chmod(0o555)
            stack.callback((tmp_path / "ro").chmod, 0o755)
            unwritable = start_recorder(procs, bus_cfg, tmp_path / "ro" / "lift", name="unwritable")
        for proc in (mismatch, unwritable):
            if proc is not None:
                wait_until(lambda p=proc: p.popen.poll() is not None, what="the refusal")
                assert proc.popen.returncode == 2, proc.output()
    out = mismatch.output()
    assert "features differ" in out and "observation.images.left_wrist" in out
    assert "observation.state: shape [6] in the folder, [12] here" in out
    assert json.loads((lift_copy / "meta" / "info.json").read_text())["total_episodes"] == 20
    if unwritable is not None:
        assert "cannot write" in unwritable.output()


class Witness:
    """Every camera/front message on the bus: capture time -> (replay episode, frame)."""

    def __init__(self, cfg: BusConfig):
        self.frames: dict[float, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._sub = Subscriber(cfg, ["camera/front"], mode="every", queue=20000)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.recv(0.1)
            if msg is not None:
                self.frames[msg.t_cap] = (msg.data["episode"], msg.data["frame"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sub.close()


def echo_actions(cfg: BusConfig, stop: threading.Event) -> None:
    """A stand-in controller: for every state/arm, action/arm = state + 1 to execute then."""
    with Subscriber(cfg, ["state/arm"], mode="every") as sub:
        pub = Publisher(cfg, "test-control")
        while not stop.is_set():
            msg = sub.recv(0.1)
            if msg is not None:
                pub.publish(
                    "action/arm",
                    {"goal": msg.arrays["position"] + np.float32(1)},
                    {"t_exec": msg.t_cap, "t_obs": msg.t_cap, "episode": -1},
                    t_cap=msg.t_cap,
                )
        pub.close(linger=0)


def test_records_replayed_episodes_exactly(tmp_path, bus_cfg, hub, procs) -> None:
    from drivers.replay import DatasetReplay

    root = tmp_path / "rec" / "lift"
    recorder = start_recorder(procs, bus_cfg, root, "--task=lift")
    witness = Witness(bus_cfg)
    stop = threading.Event()
    controller = threading.Thread(target=echo_actions, args=(bus_cfg, stop), daemon=True)
    controller.start()
    try:
        recorder.wait_for_output("ready:", timeout=90)
        replay = procs(
            "replay",
            "-m",
            "workers.replay",
            "--task=lift",
            "--episodes=[0,1]",
            "--loop=false",
            "--wait_for_listeners=30",
            *bus_args(bus_cfg),
        )
        wait_until(
            lambda: saved_count(recorder) == 2 or recorder.popen.poll() is not None,
            timeout=120,
            what="two saved episodes",
        )
        assert replay.popen.wait(30) == 0, replay.output()
    finally:
        stop.set()
        controller.join(10)
        witness.close()
    assert recorder.stop() == 0, recorder.output()
    assert "2 episodes saved this run" in recorder.output()

    ref = DatasetReplay(LIFT, episodes=[0, 1])
    ds = load_recording(root)
    hf = ds.hf_dataset.with_format("numpy")
    assert ds.meta.total_episodes == 2 and ds.fps == 30
    assert ds.meta.features["observation.state"]["names"][0] == "shoulder_pan.pos"
    for ep in (0, 1):
        report = json.loads((root / "meta" / "recorder" / f"episode_{ep:06d}.json").read_text())
        assert report["bus_episode"] == ep and report["task"] == "lift the cube"
        rows = np.flatnonzero(np.asarray(hf["episode_index"]) == ep)
        steps = list(ref.steps(ep))
        # Which published frame each recorded frame is (the witness saw every one).
        src = [witness.frames[float(hf[int(r)]["time.camera.front"])] for r in rows]
        assert {e for e, _ in src} == {ep}
        j = np.array([f for _, f in src])
        cam = report["streams"]["camera/front"]
        # In order, up to the last published frame; the alignment's counts are exact (load can
        # bunch frames: a repeat or a skip is fine as long as it is counted).
        assert j[-1] == len(steps) - 1 and np.all(np.diff(j) >= 0)
        assert cam["duplicated"] == int(np.sum(np.diff(j) == 0))
        assert cam["dropped"] == j[0] + int(np.sum(np.maximum(np.diff(j) - 1, 0)))
        assert len(rows) - cam["duplicated"] + cam["dropped"] == len(steps) == cam["received"]
        # States exactly as published.
        state = np.stack([hf[int(r)]["observation.state"] for r in rows])
        np.testing.assert_array_equal(state, np.stack([steps[i].states["arm"] for i in j]))
        # Actions: the controller's (state + 1, executed at the state's time) on the same frame;
        # frames before its first action reached the recorder take the next state, counted.
        action = np.stack([hf[int(r)]["action"] for r in rows])
        t_state = np.array([hf[int(r)]["time.state.arm"] for r in rows])
        t_action = np.array([hf[int(r)]["time.action.arm"] for r in rows])
        from_bus = t_action == t_state
        filled = int(np.argmax(from_bus))
        assert np.all(from_bus[filled:]) and report["actions_from_state"] == filled
        np.testing.assert_array_equal(action[filled:], state[filled:] + np.float32(1))
        np.testing.assert_array_equal(action[:filled], state[1 : filled + 1])
        # Frames as published, up to h264 (re-encoded once more here).
        for k in (0, len(rows) // 2, len(rows) - 1):
            img = ds[int(rows[k])]["observation.images.front"].numpy().transpose(1, 2, 0) * 255
            assert np.abs(img - steps[j[k]].images["front"]).mean() < 4
    ref.close()


def test_sigkill_while_recording_and_while_saving_then_resume(
    tmp_path, bus_cfg, hub, procs
) -> None:
    from drivers.replay import DatasetReplay

    root = tmp_path / "rec" / "lift"
    # Twice real time, recorded at 60 fps: one dataset frame per replayed step, shorter runs.
    args = ("--task=lift", "--fps=60", "--action=state")
    first = start_recorder(procs, bus_cfg, root, *args, name="rec-a")
    first.wait_for_output("ready:", timeout=90)
    procs(
        "replay",
        "-m",
        "workers.replay",
        "--task=lift",
        "--episodes=[0,1]",
        "--loop=true",
        "--speed=2",
        "--wait_for_listeners=30",
        *bus_args(bus_cfg),
    )

    # 1. Killed while recording: the next episode's videos are being encoded as it goes.
    wait_until(lambda: saved_count(first) == 1, timeout=120, what="a first saved episode")
    wait_until(lambda: list(root.glob(".encoding-*")), timeout=60, what="an episode encoding")
    first.stop(signal.SIGKILL)

    # 2. Killed while saving: as soon as the commit journal of the next episode appears.
    second = start_recorder(procs, bus_cfg, root, *args, name="rec-b")
    second.wait_for_output("ready:", timeout=90)
    assert "deleted the video of an unfinished episode" in second.output()
    wait_until(
        lambda: (root / JOURNAL_DIR / "journal.json").exists(),
        timeout=60,
        interval=0.002,
        what="a save in progress",
    )
    second.stop(signal.SIGKILL)

    # 3. Restarted: recovers whatever was half-saved, appends.
    third = start_recorder(procs, bus_cfg, root, *args, name="rec-c")
    third.wait_for_output("ready:", timeout=90)
    after_second = json.loads((root / "meta" / "info.json").read_text())["total_episodes"]
    assert after_second in (1, 2)  # the save that was cut was rolled back or had committed
    if after_second == 1:  # killed before the commit: the half-saved episode was undone
        assert "rolled back the unfinished save of episode 1" in third.output()
    wait_until(lambda: saved_count(third) == 1, timeout=60, what="a saved episode after restart")
    assert third.stop() == 0

    ref = DatasetReplay(LIFT, episodes=[0, 1])
    truth = {ep: np.stack([s.states["arm"] for s in ref.steps(ep)]) for ep in (0, 1)}
    ref.close()
    ds = load_recording(root)
    assert ds.meta.total_episodes == after_second + 1
    hf = ds.hf_dataset.with_format("numpy")
    episode_index = np.asarray(hf["episode_index"])
    for ep in range(ds.meta.total_episodes):
        report = json.loads((root / "meta" / "recorder" / f"episode_{ep:06d}.json").read_text())
        state = np.stack(
            [hf[int(r)]["observation.state"] for r in np.flatnonzero(episode_index == ep)]
        )
        gt = truth[report["bus_episode"]]
        # Each recorded state is the replay's, in order (repeats allowed where frames were).
        j = 0
        for row in state:
            while not np.array_equal(gt[j], row):
                j += 1
                assert j < len(gt), (
                    f"episode {ep}: states not from bus episode {report['bus_episode']}"
                )
        assert len(state) == report["frames"]
        ds[int(np.flatnonzero(episode_index == ep)[-1])]  # the video decodes to the last frame


class HeldWriter:
    """An EpisodeWriter stand-in whose frames wait for `gate`: encoding slower than recording."""

    min_frames = 2

    def __init__(self):
        self.gate = threading.Event()
        self.frames = 0
        self.episodes: list[int] = []

    def begin(self, task, image_hw):
        self.frames = 0
        return len(self.episodes)

    def add(self, images, states, actions, times):
        self.gate.wait(60)
        self.frames += 1

    def end(self, report):
        from drivers.recording import SavedEpisode

        self.episodes.append(self.frames)
        return SavedEpisode(
            len(self.episodes) - 1, self.frames, {**report, "frames": self.frames}, 0.0
        )

    def abort(self):
        pass

    def close(self):
        pass


class Events:
    def __init__(self):
        self.sent = []

    def __call__(self, state, data):
        self.sent.append((state, data))

    def states(self) -> list[str]:
        return [state for state, _ in self.sent]


def test_a_full_backlog_cuts_the_episode_and_refuses_new_ones_until_it_drains() -> None:
    import logging

    from bus import Message
    from drivers.recording import BackgroundWriter, EpisodeRecorder
    from workers.recorder import RecorderConfig, build_spec, deliver, settings

    cfg = RecorderConfig(task="lift", action="state", max_backlog_mb=1.0)
    spec = build_spec(cfg)
    writer = HeldWriter()
    background = BackgroundWriter(writer, max_bytes=int(cfg.max_backlog_mb * 1e6))
    events = Events()
    rec = EpisodeRecorder(settings(cfg), spec, background, events, logging.getLogger("test"))
    image = np.zeros((240, 320, 3), np.uint8)  # 230 kB: the 1 MB backlog holds 4-5 frames

    def marker(topic, t, **data):  # through the worker's adapter: bus message -> core
        deliver(rec, Message(topic, {}, data, src="teleop", t_cap=t))
        rec.tick(t)

    def frames(t0, n):  # straight into the bus-free core
        for k in range(n):
            t = t0 + k / 30
            rec.on_sample("camera/front", t, image, "cam")
            rec.on_sample("state/arm", t, np.zeros(6, np.float32), "servo")
            rec.tick(t)

    # Teleoperation markers: event/record {command}.
    marker("event/record", 100.0, command="start", task="lift")
    frames(100.0, 30)
    assert "truncated" in events.states() and not rec.accepting
    health = rec.health()
    assert health["episodes_truncated"] == 1 and not health["accepting"]
    assert 0 < health["backlog_mb"] <= cfg.max_backlog_mb + 0.3 and health["backlog_frames"] <= 5
    marker("event/record", 101.0, command="stop")
    marker("event/record", 102.0, command="start", task="lift")  # refused: still full
    assert events.states().count("refused") == 1 and rec.health()["episodes_refused"] == 1
    assert rec._open() is None

    writer.gate.set()  # the encoders catch up: nothing handed over was lost
    wait_until(background.idle, what="the backlog to drain")
    rec.tick(103.0)
    assert rec.accepting and "accepting" in events.states()
    wait_until(lambda: (rec.tick(103.0), "saved" in events.states())[1], what="the save")
    assert writer.episodes[0] == rec.health()["frames_saved"] >= 1
    marker("event/record", 104.0, command="start", task="lift")
    frames(104.0, 10)
    marker("event/record", 105.0, command="stop")
    wait_until(
        lambda: (rec.tick(106.5), events.states().count("saved") == 2)[1],
        what="the next episode saved",
    )
    background.close(10)


def test_a_clock_step_mid_episode_records_no_gap() -> None:
    """NTP setting the clock, or a paused machine resuming, while an episode records: the frames
    go on where they were (not 18,000 repeated ones for a 600 s step), and the episode's report
    says the clock stepped."""
    import logging

    from drivers.recording import BackgroundWriter, EpisodeRecorder
    from workers.recorder import RecorderConfig, build_spec, settings

    cfg = RecorderConfig(task="lift", action="state")
    writer = HeldWriter()
    writer.gate.set()
    reports: list[dict] = []
    end = writer.end
    writer.end = lambda report: (reports.append(report), end(report))[1]
    background = BackgroundWriter(writer, max_bytes=100_000_000)
    rec = EpisodeRecorder(
        settings(cfg), build_spec(cfg), background, Events(), logging.getLogger("test")
    )
    image = np.zeros((48, 64, 3), np.uint8)

    def frames(t0: float, n: int) -> float:
        for k in range(n):
            t = t0 + k / 30
            rec.on_sample("camera/front", t, image, "cam")
            rec.on_sample("state/arm", t, np.zeros(6, np.float32), "servo")
            rec.tick(t)
        return t

    rec.on_marker("start", "control", 100.0, task="lift")
    frames(100.0, 30)
    assert rec.shift_clock(600.0) == 1  # the open episode moved
    last = frames(700.0 + 30 / 30, 30)
    rec.on_marker("stop", "control", last + 0.002)
    wait_until(lambda: (rec.tick(last + 10), writer.episodes)[1], what="the episode saved")
    background.close(10)
    assert writer.episodes == [60]
    assert reports[0]["clock_step_s"] == 600.0
    assert reports[0]["streams"]["camera/front"]["duplicated"] == 0


def test_with_sources_set_actions_from_another_process_are_counted_not_recorded() -> None:
    import logging

    from drivers.recording import BackgroundWriter, EpisodeRecorder
    from workers.recorder import RecorderConfig, build_spec, settings

    cfg = RecorderConfig(task="lift", sources=["control"])
    background = BackgroundWriter(HeldWriter(), max_bytes=10_000_000)
    warned: list[str] = []
    rec = EpisodeRecorder(
        settings(cfg),
        build_spec(cfg),
        background,
        Events(),
        logging.getLogger("test"),
        warn=lambda _key, text: warned.append(text),
    )
    goal = np.zeros(6, np.float32)
    rec.on_sample("action/arm", 1.0, goal, "control")
    rec.on_sample("action/arm", 1.0, goal, "teleop")  # a second controller on the same arm
    assert rec.received["action/arm"] == 1 and rec.rejected == 1
    assert warned == ["action/arm from 'teleop', not one of --sources; not recorded"]
    background.close(10)


def test_lerobot_still_has_what_the_recorder_relies_on() -> None:
    """The recorder subclasses lerobot internals and sets private flags (all of it in
    drivers/recording/lerobot_compat.py): a lerobot upgrade that moves any of them fails here,
    by name, instead of corrupting a recording later."""
    from drivers.recording import lerobot_compat

    assert lerobot_compat.check() == [], "lerobot changed under the recorder"
