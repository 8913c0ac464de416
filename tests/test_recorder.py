"""The recorder: frame clock, crash-safe dataset writer, and the worker on a real hub.

Crash safety is tested with real SIGKILLs: at nine points of a save inside lerobot's writer
(tests/recorder_faults.py), and on the recorder process while it records and while it saves.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bus import BusConfig, Publisher, Subscriber
from core.frame_clock import EpisodeClock
from drivers.recording import (
    JOURNAL_DIR,
    DatasetSpec,
    EpisodeWriter,
    RecordingError,
    feature_differences,
)

from conftest import REPO, bus_args, wait_until

LIFT = REPO / "datasets" / "lift"
FAULTS = [
    "mid-episode",
    "tasks",
    "data",
    "video",
    "info-torn",
    "stats",
    "index",
    "before-commit",
    "first",
]


# ---------------------------------------------------------------------------- frame clock


def feed(clock: EpisodeClock, stream: str, times) -> None:
    for t in times:
        clock.offer(stream, float(t), round(float(t), 6))


def test_clock_takes_the_newest_sample_per_frame_and_counts_what_it_did() -> None:
    rng = np.random.default_rng(0)
    clock = EpisodeClock(30, ["cam", "state"], t_start=10.0)
    cam = 10.0 + np.arange(60) / 30 + rng.uniform(-0.012, 0.012, 60)  # jittery 30 Hz
    state = 10.001 + np.arange(200) / 100  # 100 Hz: about 3 per frame
    feed(clock, "cam", cam)
    feed(clock, "state", state)
    clock.stop(cam[-1] + 0.002)  # the stop marker follows the last frame
    ticks = clock.ready(now=1e12)
    assert clock.finished(1e12)
    assert clock.t0 == pytest.approx(max(cam[0], state[0]))
    rep = clock.report()["streams"]
    # A jittery camera at the frame rate: one sample per frame, none dropped or repeated.
    assert [t.samples["cam"].t for t in ticks] == list(cam)
    assert rep["cam"]["dropped"] == rep["cam"]["duplicated"] == 0
    # Every frame takes the newest state at or before the end of its window (half a frame on),
    # and nothing captured after the stop.
    for t in ticks:
        end = min(t.t + 0.5 / 30, clock.t_stop)
        assert t.samples["state"].t == max(s for s in state if s <= end)
    # Every sample of the episode is accounted for: used once, or dropped for a newer one.
    s = rep["state"]
    assert s["used"] + s["dropped"] == s["received"] == 196  # the 196 before the stop


def test_clock_repeats_a_slow_camera_and_moves_on_without_a_dead_one() -> None:
    clock = EpisodeClock(30, ["cam", "state"], t_start=0.0, max_latency=1.0)
    feed(clock, "cam", np.arange(50) / 25)  # 25 Hz for 2 s
    feed(clock, "state", np.arange(60) / 30)
    clock.stop(59 / 30)
    clock.ready(now=1e12)
    rep = clock.report()
    assert rep["frames"] == 60
    assert rep["streams"]["cam"]["duplicated"] == 10 and rep["streams"]["cam"]["dropped"] == 0
    assert rep["achieved_fps"] == pytest.approx(25.0)

    clock = EpisodeClock(30, ["cam", "state"], t_start=0.0, max_latency=1.0)
    feed(clock, "cam", np.arange(10) / 30)  # the camera dies after 10 frames
    feed(clock, "state", np.arange(90) / 30)
    # Frames wait for the camera while it may still come ...
    assert len(clock.ready(now=0.5)) == 9
    # ... and go on without it once it is max_latency late; never ahead of the data.
    ticks = clock.ready(now=100.0)
    assert len(ticks) == 81 and ticks[-1].t == pytest.approx(89 / 30)
    assert clock.report()["streams"]["cam"]["duplicated"] == 80
    # A sample that arrives after its frame was handed out is counted, not used.
    clock.offer("cam", 0.5, "late")
    assert clock.report()["streams"]["cam"]["late"] == 1


def test_clock_actions_are_optional_until_they_come_then_awaited() -> None:
    clock = EpisodeClock(30, ["state"], ["action"], t_start=0.0)
    feed(clock, "state", np.arange(10) / 30)
    first = clock.ready(now=0.2)
    assert first and all(t.samples["action"] is None for t in first)
    n = len(first)
    feed(clock, "action", [n / 30, (n + 1) / 30])  # actions start: frames now wait for them
    feed(clock, "state", np.arange(10, 20) / 30)
    more = clock.ready(now=0.0)
    assert len(more) == 1 and more[0].samples["action"].t == pytest.approx(n / 30)
    assert clock.report()["streams"]["action"]["missing"] == n


# ---------------------------------------------------------------------------- writer


def _recorder_faults():
    sys.path.insert(0, str(Path(__file__).parent))
    import recorder_faults

    return recorder_faults


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(f"local/{root.name}", root=root, video_backend="pyav")


def states_of(ds) -> np.ndarray:
    return np.stack(ds.hf_dataset.with_format("numpy")["observation.state"])


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """One dataset copy per fault point, each left by a writer SIGKILLed there."""
    work = tmp_path_factory.mktemp("faults")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "recorder_faults.py"), str(work), *FAULTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["scenario"] for r in results] == FAULTS, out.stdout + out.stderr
    for r in results:
        assert r["signal"] == signal.SIGKILL, f"{r}: the fault was not reached\n{out.stderr}"
    return work


@pytest.mark.parametrize("fault", FAULTS)
def test_sigkill_during_an_episode_or_its_save_loses_only_that_episode(killed, fault) -> None:
    rf = _recorder_faults()
    root = killed / fault / "ds"
    writer = EpisodeWriter(root, rf.SPEC)
    actions = writer.open()  # the recovery step
    before = 0 if fault == "first" else rf.BASE_EPISODES
    if fault == "first":
        assert not root.exists() and any("unfinished first episode" in a for a in actions)
    elif fault == "mid-episode":
        assert any("video of an unfinished episode" in a for a in actions), actions
    else:
        assert any(f"rolled back the unfinished save of episode {before}" in a for a in actions), (
            actions
        )
    assert not (root / JOURNAL_DIR).exists()
    # The episodes saved before the kill are all there; appending works and they stay intact.
    rf.record(writer, before)
    writer.close()
    ds = load(root)
    assert ds.meta.total_episodes == before + 1
    expected = np.concatenate([rf.episode_state(e) for e in range(before + 1)])
    np.testing.assert_array_equal(states_of(ds), expected)
    last = ds[len(ds) - 1]["observation.images.front"].numpy().transpose(1, 2, 0) * 255
    assert np.abs(last - rf.episode_image(before, rf.FRAMES - 1)).mean() < 6


def test_disk_full_during_a_save_rolls_back_and_stops_recording(tmp_path, monkeypatch) -> None:
    import lerobot.datasets.dataset_metadata as dm

    rf = _recorder_faults()
    root = tmp_path / "ds"
    writer = EpisodeWriter(root, rf.SPEC)
    writer.open()
    rf.record(writer, 0)

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dm, "write_stats", no_space)
    with pytest.raises(RecordingError, match="disk full") as err:
        rf.record(writer, 1)
    assert err.value.kind == "disk_full"
    with pytest.raises(RecordingError, match="disk full"):  # stays stopped
        writer.begin("lift the cube", {"front": rf.HW})
    writer.close()
    monkeypatch.undo()
    assert not (root / JOURNAL_DIR).exists()
    np.testing.assert_array_equal(states_of(load(root)), rf.episode_state(0))


@contextlib.contextmanager
def small_filesystem(path: Path, size: str, readonly: bool = False):
    """A tmpfs of `size` mounted at `path` (root only); skips the test where that is refused."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small filesystem")
    opts = f"size={size}" + (",ro" if readonly else "")
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_on_a_real_small_filesystem(tmp_path) -> None:
    rf = _recorder_faults()
    rng = np.random.default_rng(0)
    with small_filesystem(tmp_path / "disk", "400k") as disk:
        root = disk / "ds"
        writer = EpisodeWriter(root, rf.SPEC)
        writer.open()
        saved = 0
        with pytest.raises(RecordingError, match="disk full"):
            for ep in range(100):
                writer.begin("lift the cube", {"front": rf.HW})
                for k in range(rf.FRAMES):
                    noise = rng.integers(0, 255, (*rf.HW, 3), dtype=np.uint8)  # hard to encode
                    t = 1e9 + ep * 10 + k / 30
                    writer.add(
                        {"front": noise},
                        [rf.episode_state(ep)[k]],
                        [None],
                        {"camera/front": t, "state/arm": t},
                    )
                writer.end()
                saved += 1
        writer.close()
        assert saved >= 1
        assert not (root / JOURNAL_DIR).exists() and not list(root.glob(".encoding-*"))
        ds = load(root)
        assert ds.meta.total_episodes == saved
        np.testing.assert_array_equal(
            states_of(ds), np.concatenate([rf.episode_state(e) for e in range(saved)])
        )


def test_features_that_differ_are_named() -> None:
    info = json.loads((LIFT / "meta" / "info.json").read_text())
    sort = DatasetSpec(
        fps=30, cameras=["front", "left_wrist", "right_wrist"], arms=["left_arm", "right_arm"]
    )
    diffs = " ".join(feature_differences(info, 30, sort))
    assert "observation.images.left_wrist" in diffs and "observation.state: shape [6]" in diffs
    lift = DatasetSpec(fps=30, cameras=["front"], arms=["arm"])
    assert feature_differences(info, 30, lift) == []
    assert feature_differences(info, 30, lift, {"front": (240, 320)}) == [
        "observation.images.front: shape [480, 640, 3] in the folder, [240, 320, 3] here"
    ]
    assert lift.names[0] == "shoulder_pan.pos" and sort.names[6] == "right_shoulder_pan.pos"


# ---------------------------------------------------------------------------- the worker


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
    ds = load(root)
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
    ds = load(root)
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
