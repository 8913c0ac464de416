"""The replay worker: a recorded LeRobotDataset played onto the bus as cameras and arms.

    uv run python -m workers.replay --task=lift [--dataset=datasets/lift] [--speed=1.0]
        [--episodes='[0,3]'] [--loop=true] [--bus.*]

Publishes `camera/<name>` and `state/<arm>` at the dataset's fps (times the speed factor) with
real capture times, `event/episode` start/stop markers, and `health/replay`. Listens to
`action/<arm>` and reports, per episode, the open-loop error between the commanded actions and
the dataset's recorded ones (`event/open_loop` and the log). When playback falls behind its
schedule it says so, and by how much, rather than silently slowing down.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from bus import BusConfig, Message, Publisher, Subscriber, topics
from bus.clock import now
from bus.health import HealthReporter
from bus.log import Throttle
from drivers.replay import DatasetReplay, ReplayError, ReplayStep
from workers import lifecycle
from workers.tasks import Task, get_task


@dataclass
class ReplayConfig:
    bus: BusConfig = field(default_factory=BusConfig)
    task: str = "lift"
    # A local LeRobotDataset v3 folder; empty = datasets/<task>.
    dataset: str = ""
    # Episodes to play, in this order; empty = all.
    episodes: list[int] = field(default_factory=list)
    # 1.0 = real time; 2.0 = twice as fast.
    speed: float = 1.0
    # Start over after the last episode (the fake env runs until stopped).
    loop: bool = True
    # Name on the bus (source of messages and health/<name>).
    name: str = "replay"
    # Seconds to wait at start for someone to listen to event/episode.
    wait_for_listeners: float = 2.0


class OpenLoopError:
    """Commanded actions vs the dataset's recorded ones, per arm and joint, for one episode.

    A command is compared with the recorded action of the frame that was on the bus at the
    command's execution time (`t_exec`, else its capture time)."""

    def __init__(self, recorded: dict[str, np.ndarray]):
        self.recorded = recorded
        self.frame_times: list[float] = []
        self.sq = {arm: np.zeros(a.shape[1]) for arm, a in recorded.items()}
        self.count = dict.fromkeys(recorded, 0)
        self.rejected = 0

    def frame_shown(self, t: float) -> None:
        self.frame_times.append(t)

    def add(self, arm: str, msg: Message) -> None:
        goal = msg.arrays["goal"]
        rec = self.recorded.get(arm)
        if rec is None or goal.shape[0] != rec.shape[1] or not self.frame_times:
            self.rejected += 1
            return
        t = float(msg.data.get("t_exec", msg.t_cap))
        index = max(0, bisect.bisect_right(self.frame_times, t + 1e-6) - 1)
        index = min(index, rec.shape[0] - 1)
        self.sq[arm] += (goal.astype(np.float64) - rec[index]) ** 2
        self.count[arm] += 1

    def report(self) -> dict:
        per_joint = {
            arm: (np.sqrt(self.sq[arm] / n).round(4).tolist() if n else None)
            for arm, n in self.count.items()
        }
        total = sum(self.count.values())
        overall = (
            float(
                np.sqrt(
                    sum(s.sum() for s in self.sq.values())
                    / sum(n * len(self.sq[a]) for a, n in self.count.items())
                )
            )
            if total
            else None
        )
        return {
            "rmse_per_joint": per_joint,
            "rmse": overall,
            "actions": self.count,
            "rejected": self.rejected,
        }


@dataclass
class PlaybackStats:
    frames: int = 0
    late: int = 0  # steps published more than one frame interval behind schedule
    max_lag_ms: float = 0.0
    intervals: list[float] = field(default_factory=list)

    def rate(self) -> float:
        recent = self.intervals[-60:]
        return 1.0 / float(np.mean(recent)) if recent else 0.0


def publish_step(pub: Publisher, step: ReplayStep, names: dict[str, list[str]]) -> float:
    """One dataset step onto the bus, stamped with the time it is published (what a camera
    and a servo reading taken now would carry)."""
    t_cap = now()
    for camera, image in step.images.items():
        pub.publish(
            topics.camera(camera),
            {"image": image},
            {"frame": step.index, "episode": step.episode},
            t_cap=t_cap,
        )
    for arm, position in step.states.items():
        pub.publish(topics.state(arm), {"position": position}, {"names": names[arm]}, t_cap=t_cap)
    return t_cap


class Playback:
    """The dataset on the bus: episodes in order (each decoder opened one episode ahead), every
    frame on its schedule, and the open-loop error of the actions that came back."""

    def __init__(
        self,
        cfg: ReplayConfig,
        task: Task,
        replay: DatasetReplay,
        pub: Publisher,
        actions: Subscriber,
        log: logging.Logger,
        stop: threading.Event,
    ):
        self.cfg, self.task, self.replay, self.log, self.stop = cfg, task, replay, log, stop
        self.period = 1.0 / (replay.fps * cfg.speed)
        self.pub, self.actions = pub, actions  # the actions that came back: action/<arm>
        self.stats = PlaybackStats()
        self.current = {"episode": None, "frame": 0}
        self.health = HealthReporter(self.pub, cfg.name, self._health)
        self.lag_log = Throttle(5.0)

    def _health(self) -> dict:
        stats = self.stats
        return {
            **self.current,
            "rate_hz": stats.rate(),
            "drops": {"late_frames": stats.late, "actions_bad": self.actions.bad},
            "fps_target": self.replay.fps * self.cfg.speed,
            "fps_achieved": round(stats.rate(), 2),
            "frames": stats.frames,
            "late_frames": stats.late,
            "max_lag_ms": round(stats.max_lag_ms, 1),
            "actions_received": self.actions.received,
            "actions_bad": self.actions.bad,
        }

    def run(self) -> None:
        # Episode markers must not fall into ZeroMQ's slow-joiner window: give listeners
        # (control, recorder) a moment to be heard before the first start marker.
        wait = self.cfg.wait_for_listeners
        if not self.pub.wait_for_subscriber(topics.event("episode"), wait):
            self.log.info("no listener for event/episode after %.0f s; playing anyway", wait)
        self.log.info(
            "ready: replaying %s on the bus (%s)", self.replay.root.name, self.cfg.bus.pub
        )
        order = list(self.replay.episodes)
        # Opening and seeking a video at the start of an episode held up its first frames by
        # ~250 ms: each episode's decoder is opened while the one before it plays.
        upcoming = self.replay.steps(order[0])
        while not self.stop.is_set():
            for i, episode in enumerate(order):
                if self.stop.is_set():
                    return
                steps, last = upcoming, i + 1 == len(order)
                following = order[0] if last else order[i + 1]
                upcoming = self.replay.steps(following) if self.cfg.loop or not last else None
                self.play(episode, steps)
            if not self.cfg.loop:
                return

    def play(self, episode: int, steps) -> None:
        error = OpenLoopError(self.replay.recorded_actions(episode))
        n = self.replay.num_frames(episode)
        self.current.update(episode=episode, frame=0)
        self._marker("start", episode, frames=n, fps=self.replay.fps)
        start, last_pub = None, None
        for step in steps:
            if start is None:  # the clock starts with the first decoded step
                start = time.monotonic() - step.index * self.period
            if not self._wait_until(start + step.index * self.period):
                break
            lag = time.monotonic() - (start + step.index * self.period)
            t_pub = publish_step(self.pub, step, self.replay.arms)
            error.frame_shown(t_pub)
            self._count(episode, step.index, t_pub, last_pub, lag)
            last_pub = t_pub
            self._take_actions(error)
            self.health.tick()
        self._take_actions(error)  # actions in flight for the last frame
        self._report(episode, n, error)

    def _wait_until(self, due: float) -> bool:
        while (wait := due - time.monotonic()) > 0 and not self.stop.is_set():
            time.sleep(min(wait, 0.05))
            self.health.tick()
        return not self.stop.is_set()

    def _count(self, episode: int, frame: int, t_pub: float, last_pub, lag: float) -> None:
        stats = self.stats
        self.current["frame"] = frame
        stats.frames += 1
        if last_pub is not None:
            stats.intervals.append(t_pub - last_pub)
            del stats.intervals[:-300]
        if lag <= self.period:
            return
        stats.late += 1
        stats.max_lag_ms = max(stats.max_lag_ms, lag * 1000)
        if (held := self.lag_log.ready("lag")) is not None:
            self.log.warning(
                "playback behind schedule by %.0f ms at episode %d frame %d (%d late frames so "
                "far; decoding or the machine cannot hold %.1f fps)%s",
                lag * 1000,
                episode,
                frame,
                stats.late,
                self.replay.fps * self.cfg.speed,
                f" (+{held} more)" if held else "",
            )

    def _take_actions(self, error: OpenLoopError) -> None:
        while (msg := self.actions.recv(0)) is not None:
            error.add(msg.topic.split("/", 1)[1], msg)

    def _marker(self, phase: str, episode: int, **data) -> None:
        self.pub.publish(
            topics.event("episode"),
            data={
                "phase": phase,
                "episode": episode,
                "task": self.task.name,
                "source": self.cfg.name,
                **data,
            },
        )

    def _report(self, episode: int, n: int, error: OpenLoopError) -> None:
        report = {"episode": episode, "task": self.task.name, **error.report()}
        self._marker("stop", episode, frames=n, open_loop=report)
        self.pub.publish(topics.event("open_loop"), data=report)
        if report["rmse"] is None:
            self.log.info("episode %d done (%d frames); no actions received", episode, n)
            return
        self.log.info(
            "episode %d done (%d frames); open-loop error vs recorded actions: RMSE %.3f over "
            "%s actions, per joint %s",
            episode,
            n,
            report["rmse"],
            report["actions"],
            report["rmse_per_joint"],
        )


def main() -> None:
    cfg = lifecycle.parse_or_exit(ReplayConfig, "replay")
    try:
        task, replay = open_dataset(cfg)
    except (ReplayError, ValueError) as exc:
        lifecycle.exit_bad_config("replay", exc)
    with lifecycle.Process(cfg.name) as proc:
        proc.closing(replay)
        log_dataset(proc.log, cfg, replay)
        pub = proc.closing(Publisher(cfg.bus, cfg.name))
        actions = proc.closing(
            Subscriber(cfg.bus, [topics.action(arm) for arm in replay.arms], mode="every")
        )
        playback = Playback(cfg, task, replay, pub, actions, proc.log, proc.stop)
        proc.health = playback.health
        playback.run()
        proc.last_words = f"stopped after {playback.stats.frames} frames"


def open_dataset(cfg: ReplayConfig) -> tuple[Task, DatasetReplay]:
    """The task and its dataset, checked against each other (ReplayError, ValueError)."""
    task = get_task(cfg.task)
    if cfg.speed <= 0:
        raise ValueError(f"--speed must be > 0, got {cfg.speed}")
    replay = DatasetReplay(cfg.dataset or task.dataset, episodes=cfg.episodes or None)
    if sorted(replay.arms) != sorted(task.arms):
        # Control waits for the task's arms: a 12-joint `state/arm` would starve it forever.
        raise ValueError(
            f"dataset {replay.root} has arm(s) {list(replay.arms)} but task {task.name} "
            f"drives {list(task.arms)}: a two-arm dataset names its joints left_*/right_* "
            "(lerobot's bimanual convention); pick the matching --task"
        )
    return task, replay


def log_dataset(log: logging.Logger, cfg: ReplayConfig, replay: DatasetReplay) -> None:
    log.info(
        "dataset %s: %d episodes, %d fps, cameras %s, arms %s; speed %.2f; %s",
        replay.root,
        len(replay.episodes),
        replay.fps,
        {k: f"{w}x{h}" for k, (h, w) in replay.cameras.items()},
        list(replay.arms),
        cfg.speed,
        "index from the cache (lerobot not imported)"
        if replay.from_cache
        else "opened through lerobot",
    )


if __name__ == "__main__":
    main()
