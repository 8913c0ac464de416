"""The recorder worker: what crosses the bus, written as LeRobotDataset v3 episodes.

    uv run python -m workers.recorder --root=recordings/lift --task=lift [--fps=30]
        [--action=bus|state] [--cameras='[front]'] [--arms='[arm]'] [--max_backlog_mb=1024]
        [--preset=superfast] [--bus.*]

Episodes are delimited by `event/episode` {phase: start/stop} (control, replay) or
`event/record` {command: start/stop} (teleoperation, dashboard). Every message of the task's
`camera/*`, `state/*` (and `action/*`) topics is received and aligned to the dataset's frame
clock from the capture times (core/frame_clock.py); frames go to a writer thread that
encodes video while the episode runs and commits each episode on its own
(drivers/recording/): a crash loses at most the episode in progress, and the next start
repairs the folder (logged). `event/recorder` says what happened to each episode,
`health/recorder` shows the backlog. With `--action=state`, or for frames before the first
`action/<arm>` message of an episode, the action is the arm's state one frame later.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from bus import BusConfig, Message, Publisher, Subscriber, topics
from bus.clock import ClockSteps, describe_step, now
from bus.health import HealthReporter
from bus.log import Throttle, warn_throttled
from drivers.recording import (
    BackgroundWriter,
    DatasetSpec,
    EncoderSettings,
    EpisodeRecorder,
    EpisodeWriter,
    RecorderSettings,
    RecordingError,
)
from workers import lifecycle
from workers.tasks import REPO, TASKS, get_task

ROBOT_TYPES = {1: "so101_follower", 2: "bi_so_follower"}


@dataclass
class RecorderConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    # Dataset folder (LeRobotDataset v3); empty = recordings/<task>. Appended to if it exists.
    root: str = ""
    # lerobot repo id written into nothing but the loader's cache key; empty = local/<folder>.
    repo_id: str = ""
    # Task: its arms, cameras and the default task text.
    task: str = "lift"
    cameras: list[str] = field(default_factory=list)  # empty = the task's cameras
    arms: list[str] = field(default_factory=list)  # empty = the task's arms, in state order
    fps: int = 30
    # "bus": action/<arm> messages (control, teleoperation); "state": the next frame's state.
    action: str = "bus"
    # Keep each stream's capture time per frame (time.<family>.<name>, float64).
    timestamps: bool = True
    # Video: h264 superfast keeps three 480x640 cameras in real time on two cores.
    vcodec: str = "h264"
    crf: int = 30
    gop: int = 10
    preset: str = "superfast"
    encoder_threads: int = 1
    # Frames waiting for the encoders, at most; beyond it the episode is cut and new ones are
    # refused until half of it has drained.
    max_backlog_mb: float = 1024.0
    # Seconds to wait for a lagging stream before a frame is written without its newest sample.
    max_latency: float = 1.0
    # Where a frame's window ends, in frames after its nominal time (0.5 = centred).
    slack: float = 0.5
    # Episode markers and actions accepted only from these processes (empty = any).
    sources: list[str] = field(default_factory=list)
    # Episodes shorter than this are not saved.
    min_frames: int = 2
    # On SIGTERM save the episode in progress (cut at that moment) instead of discarding it.
    keep_partial: bool = False
    # Seconds a clean stop waits for queued episodes to be saved.
    shutdown_timeout: float = 120.0
    name: str = "recorder"


def build_spec(cfg: RecorderConfig) -> DatasetSpec:
    task = get_task(cfg.task)
    cameras = list(cfg.cameras or task.cameras)
    arms = list(cfg.arms or task.arms)
    if cfg.action not in ("bus", "state"):
        raise ValueError(f"--action must be 'bus' or 'state', got {cfg.action!r}")
    if cfg.fps <= 0:
        raise ValueError(f"--fps must be > 0, got {cfg.fps}")
    streams = (
        [topics.camera(c) for c in cameras]
        + [topics.state(a) for a in arms]
        + [topics.action(a) for a in arms]
    )
    return DatasetSpec(
        fps=cfg.fps,
        cameras=cameras,
        arms=arms,
        robot_type=ROBOT_TYPES.get(len(arms)),
        time_streams=streams if cfg.timestamps else [],
    )


def settings(cfg: RecorderConfig) -> RecorderSettings:
    return RecorderSettings(
        record_actions=cfg.action == "bus",
        max_latency=cfg.max_latency,
        slack=cfg.slack,
        sources=tuple(cfg.sources),
        default_task=get_task(cfg.task).description,
        task_texts={name: task.description for name, task in TASKS.items()},
        max_backlog_mb=cfg.max_backlog_mb,
    )


# What each family of robot data carries as its sample.
SAMPLE_ARRAY = {"camera": "image", "state": "position", "action": "goal"}


def deliver(recorder: EpisodeRecorder, msg: Message) -> None:
    """One bus message to the recorder core: a sample, or an episode marker."""
    family = topics.family(msg.topic)
    if family in SAMPLE_ARRAY:
        value = msg.arrays.get(SAMPLE_ARRAY[family])
        if value is None:
            recorder.warn(msg.topic, f"{msg.topic} from {msg.src!r} without {SAMPLE_ARRAY[family]}")
            return
        # Actions are aligned on when they execute, everything else on when it was captured.
        t = float(msg.data.get("t_exec", msg.t_cap)) if family == "action" else msg.t_cap
        recorder.on_sample(msg.topic, t, value, msg.src)
        return
    source = str(msg.data.get("source") or msg.src)
    task = str(msg.data.get("task") or "")
    if msg.topic == topics.event("episode"):
        recorder.on_marker(msg.data.get("phase"), source, msg.t_cap, task, msg.data.get("episode"))
    elif msg.topic == topics.event("record"):
        recorder.on_marker(msg.data.get("command"), source, msg.t_cap, task)


def main() -> None:
    cfg = lifecycle.parse_or_exit(RecorderConfig, "recorder")
    try:
        spec = build_spec(cfg)
    except ValueError as exc:
        lifecycle.exit_bad_config("recorder", exc)
    with lifecycle.Process(cfg.name) as proc:
        record(cfg, spec, proc)


def open_writer(cfg: RecorderConfig, spec: DatasetSpec, log: logging.Logger) -> EpisodeWriter:
    """The dataset folder, opened (and repaired after a crash); a bad one ends the process."""
    root = cfg.root or str(REPO / "recordings" / cfg.task)
    try:
        encoder = EncoderSettings(
            vcodec=cfg.vcodec,
            crf=cfg.crf,
            gop=cfg.gop,
            preset=cfg.preset or None,
            threads=cfg.encoder_threads or None,
        )
        writer = EpisodeWriter(
            root, spec, repo_id=cfg.repo_id or None, encoder=encoder, min_frames=cfg.min_frames
        )
        for action in writer.open():
            log.warning("recovery of %s: %s", writer.root, action)
    except (RecordingError, ValueError) as exc:
        hint = (
            " (--task, --cameras, --arms, --fps and --timestamps choose what is recorded)"
            if getattr(exc, "kind", "") == "mismatch"
            else ""
        )
        log.error("%s%s", exc, hint)
        raise SystemExit(2) from None
    log.info(
        "dataset %s: %d episodes so far; %d fps, cameras %s, arms %s, action from %s; "
        "video %s crf %d gop %d preset %s",
        writer.root,
        writer.episodes,
        spec.fps,
        spec.cameras,
        spec.arms,
        cfg.action,
        cfg.vcodec,
        cfg.crf,
        cfg.gop,
        cfg.preset,
    )
    return writer


def record(cfg: RecorderConfig, spec: DatasetSpec, proc: lifecycle.Process) -> None:
    log = proc.log
    writer = open_writer(cfg, spec, log)
    background = BackgroundWriter(writer, int(cfg.max_backlog_mb * 1e6))
    pub = proc.closing(Publisher(cfg.bus, cfg.name))
    throttle = Throttle(5.0)
    recorder = EpisodeRecorder(
        settings(cfg),
        spec,
        background,
        emit=lambda _state, data: pub.publish(topics.event("recorder"), data=data),
        log=log,
        warn=lambda key, text: warn_throttled(log, throttle, key, text),
        image_hw=writer.image_hw,
    )
    markers = [topics.event("episode"), topics.event("record")]
    sub = proc.closing(Subscriber(cfg.bus, recorder.streams + markers, mode="every"))

    def collect() -> dict:
        own, bus = recorder.health(), sub.stats()
        drops = {
            k: own[k] for k in ("episodes_refused", "episodes_truncated", "episodes_discarded")
        }
        drops.update(sub.drops())
        return {**own, **bus, "drops": drops}

    proc.health = health = HealthReporter(pub, cfg.name, collect)
    log.info("ready: recording episodes from %s", cfg.bus.sub)

    clock = ClockSteps()
    while not proc.stop.is_set():
        msg = sub.recv(0.05)
        while msg is not None:  # drain everything queued before doing anything else
            deliver(recorder, msg)
            msg = sub.recv(0)
        if step := clock.check():
            moved = recorder.shift_clock(step)
            log.warning("%s; %d open episode(s) re-anchored", describe_step(step), moved)
        recorder.tick(now())
        health.tick()

    # Stopping: what was recorded is saved (up to --shutdown_timeout), never dropped silently.
    recorder.shutdown(cfg.keep_partial, now())
    deadline = time.monotonic() + cfg.shutdown_timeout
    while not background.idle() and time.monotonic() < deadline:
        b = background.backlog_snapshot()
        log.info("saving before exit: %d frames, %d episodes queued", b.frames, b.episodes_queued)
        time.sleep(0.5)
        recorder.tick(math.inf)
        health.tick()
    if not background.close(timeout=max(1.0, deadline - time.monotonic())):
        log.error("episodes still being saved at exit: they are rolled back at the next start")
    recorder.tick(math.inf)
    proc.last_words = (
        f"stopped; {recorder.saved} episodes saved this run, {writer.episodes} in {writer.root}"
    )


if __name__ == "__main__":
    main()
